"""The transfer baselines: the source ranking, and each controller through the runner."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from tabular_evaluator import OptimumEvaluator

from agents.portfolio import SourceScores
from agents.runner import TRANSFER, run_controller
from mnms_env import (
    Child,
    ChildConfig,
    ChildRequest,
    ChildResult,
    Decision,
    SearchSpace,
    Table,
    TaskCard,
    benchmark_space,
    load_table,
)
from mnms_env.features import FEATURIZERS
from mnms_env.table import enumerate_configs

TABLES = {"backend": "table"}
TARGETS = ("langid-de", "breast-cancer")  # a text and a tabular target


def config(hidden_layers: int, width: int = 128) -> ChildConfig:
    return ChildConfig(
        representation="raw",
        representation_size=0,
        hidden_layers=hidden_layers,
        width=width if hidden_layers else 128,
    )


A, B, C, D = config(0), config(1, 32), config(1, 128), config(2, 32)


def table(task: str, scores: dict[ChildConfig, float]) -> Table:
    """A hand-made table: each config's two seeds average to its score."""
    n = len(scores)
    mean = np.array(list(scores.values()))[:, None]
    val = mean + np.array([[-0.01, 0.01]])
    zeros = np.zeros((n, 2))
    space = benchmark_space()
    return Table(
        card=TaskCard(task, "tabular", 2, "hand-made"),
        budget=1,
        seeds=(0, 1),
        space=space,
        configs=tuple(scores),
        val=val,
        test=zeros,
        seconds=zeros,
        diverged=zeros.astype(bool),
        best_epoch=zeros.astype(int),
        parameters=np.zeros(n, dtype=int),
        covers=space.masks("tabular"),
    )


def held_by(ranking: SourceScores, task: str) -> list[ChildConfig]:
    """The ranked configs the task's table holds, best first: what the portfolio may try."""
    rows = set(load_table(task).configs)
    return [c for c in ranking.configs if c in rows]


def child(task: str, cfg: ChildConfig, val: float) -> Child:
    request = ChildRequest(task, cfg, fingerprint="hand-made")
    return Child(request, ChildResult(val, val, 0.0, 1, "table", False, 1))


def sources() -> SourceScores:
    """A text and a tabular source, so both targets have ranked configs."""
    return SourceScores.from_tables([load_table("langid-es"), load_table("wine")])


def test_normalisation_makes_each_source_count_equally() -> None:
    narrow = table("narrow", {A: 0.92, B: 0.91, C: 0.90, D: 0.92})  # spans 0.02
    wide = table("wide", {A: 0.50, B: 0.90, C: 0.70})  # spans 0.40; D not in it
    ranking = SourceScores.from_tables([narrow, wide])
    # raw means would rank B (0.905) > C (0.80) > A (0.71); normalised, A is best on one
    # source and worst on the other (0.5), B half-way and best (0.75), C 0 and 0.5 (0.25);
    # D is scored by the one source that holds it (1.0)
    assert ranking.configs == (D, B, A, C)
    assert ranking.scores == pytest.approx((1.0, 0.75, 0.5, 0.25))
    assert ranking.tasks == ("narrow", "wide")


def test_ties_are_broken_by_the_config_json_whatever_the_source_order() -> None:
    first = table("first", {C: 0.9, B: 0.5, A: 0.1})
    second = table("second", {A: 0.9, B: 0.5, C: 0.1})  # every config averages 0.5
    expected = tuple(sorted((A, B, C), key=ChildConfig.to_json))
    assert SourceScores.from_tables([first, second]).configs == expected
    assert SourceScores.from_tables([second, first]).configs == expected


def test_children_give_the_ranking_of_their_mean_scores() -> None:
    children = [child("wine", A, 0.6), child("wine", A, 0.8), child("wine", B, 0.75)]
    children += [child("wine", C, 0.1), child("digits", C, 1.0)]  # another task: left out
    ranking = SourceScores.from_children(children, ["wine"])
    assert ranking.configs == (B, A, C) and ranking.scores == pytest.approx((1.0, 0.6 / 0.65, 0))
    with pytest.raises(ValueError, match=r"no child of source task\(s\) \['iris'\]"):
        SourceScores.from_children(children, ["wine", "iris"])
    with pytest.raises(TypeError, match="tasks takes a list of task names, got the string"):
        SourceScores.from_children(children, "wine")  # the tasks 'w', 'i', 'n', 'e'
    with pytest.raises(TypeError, match=r"record's .child of an MNMS history\), got str"):
        SourceScores.from_children(["not a child"], ["wine"])


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ([table("flat", {A: 0.5, B: 0.5})], "every config of source task 'flat' scores 0.5"),
        ([table("t", {A: 0.1, B: 0.5})] * 2, r"each source task counts once; got \['t', 't'\]"),
        ([], "at least one source task"),
    ],
)
def test_a_ranking_that_ranks_nothing_is_refused(tables, message) -> None:
    with pytest.raises(ValueError, match=message):
        SourceScores.from_tables(tables)


@pytest.mark.parametrize("name", TRANSFER)
def test_every_baseline_gets_exactly_its_children_on_the_tables(name: str) -> None:
    history = run_controller(
        name, tasks=TARGETS, children_per_task=7, seed=0, env_kwargs=TABLES, sources=sources()
    )
    assert [c.request.task for c in history.children] == list(TARGETS) * 7
    for task in TARGETS:  # every child is one of the target's table rows
        rows = set(load_table(task).configs)
        assert all(c.request.config in rows for c in history.of_task(task))


def test_portfolio_tries_the_top_configs_first_and_none_twice() -> None:
    ranking = sources()
    history = run_controller(
        "portfolio",
        tasks=TARGETS,
        children_per_task=12,
        seed=0,
        env_kwargs=TABLES,
        sources=ranking,
    )
    text, tabular = (held_by(ranking, task) for task in ("langid-de", "breast-cancer"))
    assert tabular == [c for c in ranking.configs if c.representation == "raw"]  # wine's 300
    assert len(text) >= 12 and "raw" not in {c.representation for c in text}
    assert [c.request.config for c in history.of_task("langid-de")] == text[:12]
    assert [c.request.config for c in history.of_task("breast-cancer")] == tabular[:12]


def test_portfolio_then_tries_the_unranked_configs_in_a_seeded_order() -> None:
    # three ranked tabular configs, and a text table that breast-cancer cannot use
    wine = [child("wine", A, 0.9), child("wine", B, 0.5), child("wine", C, 0.1)]
    text = [child("langid-es", c, i / 2100) for i, c in enumerate(load_table("langid-es").configs)]
    ranking = SourceScores.from_children(wine + text, ["wine", "langid-es"])
    every = set(enumerate_configs(benchmark_space(), "tabular"))  # 300

    def portfolio(children: int, seed: int) -> list[ChildConfig]:
        history = run_controller(
            "portfolio",
            tasks=["breast-cancer"],
            children_per_task=children,
            seed=seed,
            env_kwargs=TABLES,
            sources=ranking,
        )
        return [c.request.config for c in history.children]

    tried = portfolio(len(every), seed=0)
    assert tried[:3] == [A, B, C] and set(tried) == every and len(tried) == len(every)
    assert portfolio(10, seed=0) == tried[:10] and portfolio(10, seed=1)[3:] != tried[3:10]
    with pytest.raises(ValueError, match="children_per_task=301 is more than it holds"):
        portfolio(len(every) + 1, seed=0)


def test_tpe_warm_starts_each_study_on_the_portfolio_top_configs() -> None:
    ranking = sources()
    history = run_controller(
        "tpe-warm",
        tasks=TARGETS,
        children_per_task=5,
        seed=0,
        env_kwargs=TABLES,
        sources=ranking,
        controller_kwargs={"top": 3},
    )
    for task in TARGETS:
        first = [c.request.config for c in history.of_task(task)[:3]]
        assert first == held_by(ranking, task)[:3]
    with pytest.raises(ValueError, match="top must be an int >= 1"):
        run_controller(
            "tpe-warm",
            tasks=TARGETS,
            children_per_task=2,
            env_kwargs=TABLES,
            sources=ranking,
            controller_kwargs={"top": 0},
        )


def test_source_best_starts_on_the_best_source_config_and_never_repeats_it() -> None:
    # half of all random draws give A (the width does not matter without hidden layers), so
    # random search would repeat it within 9 children with probability 1 - 2**-8
    tiny = SearchSpace((Decision("hidden_layers", (0, 1)), Decision("width", (32, 64, 96, 128))))
    ranking = SourceScores.from_children(
        [child("digits", A, 0.9), child("digits", B, 0.1)], ["digits"]
    )
    env = {"space": tiny, "store": None, "evaluator": OptimumEvaluator({"wine": {"width": 32}})}
    history = run_controller(
        "source-best",
        tasks=["wine"],
        children_per_task=9,
        seed=0,
        env_kwargs=env,
        sources=ranking,
    )
    configs = [c.request.config for c in history.children]
    assert configs[0] == A and A not in configs[1:]


@pytest.mark.parametrize(
    ("name", "tasks", "given", "message"),
    [
        ("portfolio", TARGETS, False, "portfolio tries configs ranked on source tasks first"),
        ("random", TARGETS, True, "'random' takes none"),
        ("tpe-warm", ["langid-es"], True, r"target task\(s\) \['langid-es'\] are among"),
    ],
)
def test_sources_are_refused_where_they_do_not_belong(name, tasks, given, message) -> None:
    ranking = sources() if given else None
    with pytest.raises(ValueError, match=message):
        run_controller(name, tasks=tasks, children_per_task=1, env_kwargs=TABLES, sources=ranking)


def test_the_baselines_offer_what_the_table_covers_not_what_this_machine_trains(
    monkeypatch,
) -> None:
    """Without the encoder, a table's MiniLM children are still offered (the env offers them):
    the portfolio ranks them as on any machine."""
    ranking = sources()
    expected = held_by(ranking, "langid-de")[:4]
    assert "minilm" in {c.representation for c in expected}
    missing = replace(FEATURIZERS["minilm"], package="a_package_not_installed")
    monkeypatch.setitem(FEATURIZERS, "minilm", missing)
    history = run_controller(
        "portfolio",
        tasks=["langid-de"],
        children_per_task=4,
        env_kwargs=TABLES,
        sources=ranking,
    )
    assert [c.request.config for c in history.children] == expected


def test_nearest_portfolio_follows_the_source_task_described_most_like_each_target() -> None:
    """langid-de is described as langid-es is (15,080 single words, 73% one class),
    word-sentiment-da (2,840 words, 65%) is nearest word-sentiment-en (2,704, 65%), and
    breast-cancer can use wine's configs only; without descriptors it is the portfolio."""
    names = ["langid-es", "word-sentiment-en", "wine"]
    ranking = SourceScores.from_tables(load_table(t) for t in names)
    targets = ("langid-de", "word-sentiment-da", "breast-cancer")
    history = run_controller(
        "portfolio-nearest",
        tasks=targets,
        children_per_task=5,
        seed=0,
        env_kwargs=TABLES,
        sources=ranking,
    )
    for target, source in zip(targets, names, strict=True):
        alone = held_by(SourceScores.from_tables([load_table(source)]), target)[:5]
        assert [c.request.config for c in history.of_task(target)] == alone
        if target != "breast-cancer":  # wine is its only tabular source, so the same order
            assert alone != held_by(ranking, target)[:5]
    trained = [child("wine", A, 0.9), child("wine", B, 0.5)]
    with pytest.warns(UserWarning, match="nothing to compare"):
        history = run_controller(
            "portfolio-nearest",
            tasks=["breast-cancer"],
            children_per_task=2,
            seed=0,
            env_kwargs=TABLES,
            sources=SourceScores.from_children(trained, ["wine"]),
        )
    assert [c.request.config for c in history.children] == [A, B]


def test_nearest_portfolio_keeps_a_source_whose_best_config_the_target_cannot_use() -> None:
    """A target without MiniLM (a table built without the encoder) still follows the nearest
    source whose best config is a MiniLM one, through the configs it can use."""
    names = ["langid-es", "word-sentiment-da"]  # langid-es's best config is a MiniLM one
    ranking = SourceScores.from_tables(load_table(t) for t in names)
    descriptor = load_table("langid-de").card.descriptor
    nearest = ranking.nearest(descriptor, lambda c: c.representation not in ("minilm", "raw"))
    assert nearest.tasks == ("langid-es",)


def test_a_baseline_with_nothing_to_transfer_says_so() -> None:
    with pytest.warns(UserWarning, match=r"rank no config a text task can use"):
        history = run_controller(
            "portfolio",
            tasks=["langid-de"],
            children_per_task=3,
            seed=0,
            env_kwargs=TABLES,
            sources=SourceScores.from_tables([load_table("wine")]),
        )
    assert len(history.children) == 3
