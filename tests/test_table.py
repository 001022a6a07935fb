"""The tabular back-end: benchmark space, table files, `backend="table"` and agreement with
real training."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from mnms_env import (
    BatchedEvaluator,
    ChildConfig,
    ChildRequest,
    Decision,
    ResultStore,
    SearchSpace,
    SequentialEvaluator,
    benchmark_space,
    default_space,
    load_table,
    make_task,
    register_task,
    tasks,
)
from mnms_env.features import FEATURIZERS
from mnms_env.space import SpaceError
from mnms_env.table import (
    PER_SEED,
    SHIPPED_TABLES,
    Table,
    TableError,
    _load_checked,
    available_tables,
    enumerate_configs,
    table_file,
)
from mnms_env.table_build import build_table, build_tables

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import build_table as build_script  # noqa: E402


def test_benchmark_space_enumerates_a_few_thousand_distinct_configs() -> None:
    space = benchmark_space()
    text, tabular = enumerate_configs(space, "text"), enumerate_configs(space, "tabular")
    assert (len(text), len(tabular)) == (2100, 300)
    assert len(set(text)) == len(text)
    assert {c.representation for c in tabular} == {"raw"}
    # a child without hidden layers has no width, activation or dropout: one config, one row
    shallow = [c for c in text if c.hidden_layers == 0]
    assert {(c.width, c.activation, c.dropout) for c in shallow} == {(128, "relu", 0.0)}
    assert all(space.decode(space.encode(c), "text") == c for c in text[::97])


def test_zero_hidden_layers_canonicalises_layer_settings() -> None:
    space = benchmark_space()
    a = space.decode([1, 0, 0, 0, 1, 1, 0, 0, 0], "text")
    b = space.decode([1, 0, 0, 1, 2, 0, 0, 0, 0], "text")
    assert a == b and a.width == ChildConfig.width


def test_table_file_round_trip(tmp_path) -> None:
    table = load_table("wine")
    table.save(tmp_path / "wine.npz")
    again = Table.load(tmp_path / "wine.npz")
    assert again.configs == table.configs and again.space == table.space
    for name in ("val", "test", "seconds", "diverged", "best_epoch", "parameters"):
        np.testing.assert_array_equal(getattr(again, name), getattr(table, name))


def test_a_table_with_minilm_is_searchable_without_the_encoder(monkeypatch) -> None:
    """A shipped text table holds MiniLM children; without the optional encoder nothing needs
    to train them, so the env offers every option the table covers."""
    missing = replace(FEATURIZERS["minilm"], package="a_package_not_installed")
    monkeypatch.setitem(FEATURIZERS, "minilm", missing)  # a new entry: masks made afresh
    env = gym.make("mnms_env:MNMS-v2", task="langid-es", backend="table")
    _, info = env.reset(seed=0)
    assert info["action_mask"].tolist() == [True, True, True, True, False]  # MiniLM, not raw
    _, reward, terminated, _, info = env.step(3)
    while not terminated:
        _, reward, terminated, _, info = env.step(int(np.flatnonzero(info["action_mask"])[0]))
    assert info["child"]["config"]["representation"] == "minilm" and 0 < reward <= 1


TINY_TEXT = SearchSpace(
    (
        Decision("representation", ("word-hash", "minilm")),
        Decision("representation_size", (256,)),
        Decision("hidden_layers", (0,)),
        Decision("learning_rate", (0.01,)),
    )
)


def _tiny_text_task(folder: Path) -> str:
    """A folder task of a few rows per split: `jsonl:FOLDER`."""
    folder.mkdir()
    for split, n in (("train", 24), ("validation", 8), ("test", 8)):
        rows = [
            {"text": f"{'good great' if i % 2 else 'bad awful'} {i}", "label": i % 2}
            for i in range(n)
        ]
        (folder / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return f"jsonl:{folder}"


def test_a_table_built_without_an_option_covers_only_what_it_trained(tmp_path, monkeypatch):
    task = _tiny_text_task(tmp_path / "data")
    store = ResultStore(tmp_path / "build.sqlite")
    evaluator = BatchedEvaluator(device="cpu")
    with monkeypatch.context() as patch:  # built where the encoder is missing
        missing = replace(FEATURIZERS["minilm"], package="a_package_not_installed")
        patch.setitem(FEATURIZERS, "minilm", missing)
        table = build_table(
            task, space=TINY_TEXT, seeds=[0], budget=1, evaluator=evaluator, store=store
        )
    assert [c.representation for c in table.configs] == ["word-hash"]
    assert table.covers[0].tolist() == [True, False]
    table.save(table_file(tmp_path / "tables", task))
    # searched where the encoder is installed: MiniLM is masked, not asked of the table
    again = load_table(task, tmp_path / "tables")
    assert again.covers[0].tolist() == [True, False]
    env = gym.make("mnms_env:MNMS-v2", task=task, backend="table", table_dir=tmp_path / "tables")
    _, info = env.reset(seed=0)
    assert info["action_mask"].tolist() == [True, False]
    with pytest.raises(ValueError, match="valid actions are \\[0\\]"):
        env.step(1)


def test_a_file_task_gets_one_flat_table_file(tmp_path) -> None:
    task = _tiny_text_task(tmp_path / "my data")
    path = table_file(tmp_path / "tables", task)
    assert path.parent == tmp_path / "tables" and ":" not in path.name and "/" not in path.name
    build_tables([task], tmp_path / "tables", seeds=[0], device="cpu", chunk=512)
    assert path.exists() and available_tables(tmp_path / "tables") == sorted(
        [task, *available_tables()]
    )
    assert load_table(task, tmp_path / "tables").task == task


SEARCH_TABLE_TASKS = """
import sys
import gymnasium as gym
from agents.cli import main
env = gym.make("mnms_env:MNMS-v2", tasks=["my-wine", "sst2"], backend="table")
assert [(t.modality, t.num_classes) for t in env.unwrapped.tasks] == [("tabular", 3), ("text", 2)]
argv = ["search", "--backend", "table", "--tasks", "my-wine", "sst2", "--children", "8"]
sys.exit(main([*argv, "--batch-size", "4", "--out", sys.argv[1]]))
"""


def test_any_table_is_searchable_by_name_from_a_fresh_process_with_no_data(
    tmp_path, monkeypatch
) -> None:
    """A user's registered task and a named dataset, their tables found through MNMS_TABLE_DIR
    by a process that registers nothing and has no data (and no network: HF_HUB_OFFLINE)."""
    monkeypatch.setattr(tasks, "_REGISTRY", dict(tasks._REGISTRY))
    register_task(
        "my-wine",
        lambda seed: replace(make_task("wine", seed=seed), name="my-wine"),
        modality="tabular",
    )
    space = SearchSpace(
        (
            Decision("representation", ("word-hash", "raw")),
            Decision("representation_size", (256,)),
            Decision("hidden_layers", (0,)),
            Decision("learning_rate", (0.01, 0.1)),
        )
    )
    evaluator, store = BatchedEvaluator(device="cpu"), ResultStore(tmp_path / "build.sqlite")
    for task in ("my-wine", "sst2"):  # sst2 from MNMS_DATA_DIR, as the tests are run
        table = build_table(
            task, space=space, seeds=[0], budget=1, evaluator=evaluator, store=store
        )
        table.save(table_file(tmp_path / "tables", task))
    env = {k: v for k, v in os.environ.items() if k != "MNMS_DATA_DIR"}
    env |= {"MNMS_TABLE_DIR": str(tmp_path / "tables"), "HF_HUB_OFFLINE": "1"}
    script = [sys.executable, "-c", SEARCH_TABLE_TASKS, str(tmp_path / "run")]
    done = subprocess.run(script, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["children"] == 8 and set(summary["per_task"]) == {"my-wine", "sst2"}


def test_shipped_tables_cover_the_benchmark_space() -> None:
    shipped = sorted(p.stem for p in SHIPPED_TABLES.glob("*.npz"))
    assert {"wine", "breast-cancer", "digits"} <= set(shipped)
    for task in shipped:
        table = load_table(task)
        assert table.space == benchmark_space() and len(table.seeds) >= 3
        assert np.isfinite(table.val).all() and table.mean_val().max() > 1 / table.card.num_classes
        assert (table.val.std(axis=1) > 0).any()  # seeds differ: the table keeps the noise


def test_table_env_rewards_come_from_the_table_with_a_seed_per_episode() -> None:
    env = gym.make("mnms_env:MNMS-v2", task="wine", backend="table")
    table = load_table("wine")
    actions = benchmark_space().encode(table.configs[int(table.mean_val().argmin())])
    rewards, seeds = [], set()
    obs, info = env.reset(seed=3)
    for _ in range(30):
        for a in actions:
            obs, reward, terminated, _, info = env.step(a)
        child = info["child"]
        assert terminated and child["device"] == "table" and not child["cached"]
        row = table.row(ChildConfig(**child["config"]))
        assert reward == pytest.approx(table.val[row, child["seed"]])
        assert child["seconds"] == pytest.approx(table.seconds[row, child["seed"]])
        rewards.append(reward)
        seeds.add(child["seed"])
        env.reset()
    assert seeds == set(table.seeds)
    again = gym.make("mnms_env:MNMS-v2", task="wine", backend="table")
    again.reset(seed=3)
    for a in actions:
        _, reward, *_ = again.step(a)
    assert reward == rewards[0]  # the same env seed draws the same child seeds


def test_table_vector_env_trains_nothing() -> None:
    envs = gym.make_vec(
        "mnms_env:MNMS-v2",
        num_envs=4,
        vectorization_mode="vector_entry_point",
        tasks=["wine", "digits"],
        backend="table",
    )
    _, info = envs.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(len(benchmark_space())):
        masks = envs.unwrapped.action_masks()
        actions = [rng.choice(np.flatnonzero(m)) for m in masks]
        _, rewards, terminated, _, info = envs.step(actions)
    assert terminated.all() and (rewards > 0).all()
    assert set(info["child"]["device"]) == {"table"} and envs.unwrapped.store is None


def test_table_backend_rejects_what_it_cannot_honour(tmp_path) -> None:
    with pytest.raises(ValueError, match="space="):
        gym.make("mnms_env:MNMS-v2", task="wine", backend="table", space=benchmark_space())
    with pytest.raises(TableError, match="budget=1"):
        gym.make("mnms_env:MNMS-v2", task="wine", backend="table", budget=3)
    with pytest.raises(TableError, match="seeds 0..2"):
        gym.make("mnms_env:MNMS-v2", task="wine", backend="table", child_seeds=9)
    untabled = _tiny_text_task(tmp_path / "data")  # a task no table was built for
    with pytest.raises(TableError, match=f"no table for task '{untabled}'.*mnms tables build"):
        gym.make("mnms_env:MNMS-v2", task=untabled, backend="table", table_dir=tmp_path)
    with pytest.raises(TypeError, match="a task name is a str, got int 3"):  # failed in quote
        load_table(3)
    with pytest.raises(ValueError, match="accepted: \\['train', 'table'\\]"):
        gym.make("mnms_env:MNMS-v2", task="wine", backend="lookup")
    missing = tmp_path / "tabels"  # misspelt: once searched our shipped tables silently
    with pytest.raises(TableError, match=f"table_dir='{missing}' is not a directory of tables"):
        gym.make("mnms_env:MNMS-v2", task="wine", backend="table", table_dir=missing)
    with pytest.raises(TableError, match="not in the table"):
        load_table("wine").row(ChildConfig(representation="raw", representation_size=0, l2=0.1))
    with pytest.raises(SpaceError):
        benchmark_space().encode(ChildConfig(learning_rate=0.5))


def test_table_rewards_match_real_training_within_seed_noise() -> None:
    """Retrain a sample of the shipped digits table with the reference trainer."""
    table = load_table("digits")
    rows = np.random.default_rng(0).choice(len(table.configs), size=8, replace=False)
    requests = [
        ChildRequest.for_task("digits", table.configs[i], seed=s, budget=table.budget)
        for i in rows
        for s in (0, 1)
    ]
    real = np.array([r.val_accuracy for r in SequentialEvaluator(device="cpu").evaluate(requests)])
    looked_up = np.array([table.val[i, s] for i in rows for s in (0, 1)])
    seed_noise = table.val[rows].std(axis=1).mean()
    assert np.abs(real - looked_up).mean() <= seed_noise + 0.01
    assert abs((real - looked_up).mean()) <= 0.01 + seed_noise / 2


def test_build_table_writes_a_loadable_table_and_resumes(tmp_path, monkeypatch) -> None:
    argv = ["--tasks", "wine", "--out", str(tmp_path), "--device", "cpu"]
    written = build_script.main([*argv, "--summary", str(tmp_path / "tables.md")])
    table = load_table("wine", table_dir=tmp_path)
    assert written == {"wine": tmp_path / "wine.npz"} and table.val.shape == (300, 3)
    assert table.card == make_task("wine").card
    best = table.configs[int(table.mean_val().argmax())].describe()
    assert (
        f"| wine | 300 x 3 | {table.mean_val().max():.4f} | {best} |"
        in (tmp_path / "tables.md").read_text()
    )
    median = f"| {np.median(table.mean_val()):.4f} |"  # an accuracy, named as one
    assert "| best config | median (seed mean) |" in (tmp_path / "tables.md").read_text()
    assert median in (tmp_path / "tables.md").read_text()
    env = gym.make("mnms_env:MNMS-v2", task="wine", backend="table", table_dir=tmp_path)
    env.reset(seed=0)

    def refuse(self, requests):
        raise AssertionError("a stored child was trained again")

    monkeypatch.setattr(BatchedEvaluator, "stream", refuse)
    build_script.main(argv)
    summary = tmp_path / "only.md"
    build_script.main([*argv, "--summary-only", "--summary", str(summary)])
    assert summary.read_text() == (tmp_path / "tables.md").read_text()


@pytest.mark.parametrize("env_id", ["mnms_env:MNMS-v2", "mnms_env:MNMS-OneShot-v2"])
def test_table_envs_pass_the_gymnasium_checker(env_id) -> None:
    from gymnasium.utils.env_checker import check_env

    env = gym.make(env_id, task="digits", backend="table", invalid_action="wrap")
    check_env(env.unwrapped, skip_render_check=True)


def test_benchmark_space_is_a_subset_of_the_default_space() -> None:
    default = {d.name: set(d.options) for d in default_space().decisions}
    for decision in benchmark_space().decisions:
        assert set(decision.options) <= default[decision.name], decision.name


def test_a_shipped_dataset_table_is_searched_without_its_data(monkeypatch) -> None:
    _load_checked.cache_clear()  # loaded afresh, with no data at hand
    monkeypatch.delenv("MNMS_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub is never asked either
    env = gym.make("mnms_env:MNMS-v2", task="sentiment-es", backend="table")
    _, info = env.reset(seed=0)
    terminated = False
    while not terminated:
        _, reward, terminated, _, info = env.step(int(np.flatnonzero(info["action_mask"])[-1]))
    assert info["child"]["device"] == "table" and 0 < reward <= 1
    assert env.unwrapped.task.num_classes == 3


def _npy_named_npz(path: Path) -> None:
    np.save(path.with_suffix(".npy"), np.zeros(3))
    path.with_suffix(".npy").rename(path)


def _cut_short(path: Path) -> None:
    load_table("wine").save(path)
    path.write_bytes(path.read_bytes()[:-300])


def _header_a_list(path: Path) -> None:
    np.savez(path, header=np.array("[1, 2]"))


@pytest.mark.parametrize(
    "write",
    [
        lambda p: p.write_bytes(b"half a table"),
        lambda p: p.write_bytes(b""),
        _npy_named_npz,
        _cut_short,
        _header_a_list,
    ],
    ids=["text", "empty", "npy", "cut-short", "header-a-list"],
)
def test_a_file_that_is_not_a_table_is_refused_by_name(tmp_path, write) -> None:
    write(tmp_path / "broken.npz")
    with pytest.raises(TableError, match="broken.npz"):
        load_table("broken", tmp_path)


def test_a_table_whose_rows_do_not_fit_is_refused(tmp_path) -> None:
    """A lookup into a table with a repeated config, or fewer rows or seed columns than its
    header declares, would answer with another config's or seed's accuracy, or fail mid-run."""
    table = load_table("wine")
    with pytest.raises(ValueError, match="in the table twice"):
        replace(table, configs=(table.configs[1], *table.configs[1:]))
    with pytest.raises(ValueError, match=r"val has shape \(300, 2\); 300 configs and 3 seeds"):
        replace(table, val=table.val[:, :2])
    with pytest.raises(ValueError, match=r"seeds \[0, 0, 1\] repeat a seed"):
        replace(table, seeds=(0, 0, 1))
    with pytest.raises(ValueError, match=r"covers has shape \(8, 5\)"):
        replace(table, covers=table.covers[:8])
    arrays = dict(np.load(SHIPPED_TABLES / "wine.npz"))
    np.savez(tmp_path / "wine.npz", **{**arrays, "test": table.test[:200]})
    with pytest.raises(TableError, match=r"wine.npz: .*test has shape \(200, 3\)"):
        load_table("wine", tmp_path)


def test_a_table_file_named_for_another_task_is_refused_when_loaded(tmp_path) -> None:
    load_table("wine").save(tmp_path / "wine-backup.npz")
    with pytest.raises(TableError, match="holds the table of task 'wine', not 'wine-backup'"):
        load_table("wine-backup", tmp_path)


def test_a_table_rewritten_in_the_same_process_is_read_again(tmp_path) -> None:
    table = load_table("wine")
    replace(table, seeds=(0,), **{n: getattr(table, n)[:, :1] for n in PER_SEED}).save(
        tmp_path / "wine.npz"
    )
    assert load_table("wine", tmp_path).seeds == (0,)
    table.save(tmp_path / "wine.npz")
    assert load_table("wine", tmp_path).seeds == (0, 1, 2)


@pytest.mark.parametrize("seeds", [(1, 2, 3), (0, 10, 20), (0, 0), ()])
def test_a_build_refuses_seeds_the_table_backend_would_not_read(tmp_path, seeds) -> None:
    with pytest.raises(ValueError, match="seeds must be 0 .. n-1"):
        build_tables(["wine"], tmp_path, seeds=seeds)


def test_a_misspelt_task_is_named_before_any_table_is_built(tmp_path) -> None:
    with pytest.raises(tasks.TaskError, match="unknown task 'winee'.*'wine'"):
        build_tables(["wine", "winee"], tmp_path)
    assert not list(tmp_path.iterdir())
    table = load_table("wine")
    table.save(tmp_path / "wine.npz")
    assert not list(tmp_path.glob("*.partial"))  # written aside, then moved into place
