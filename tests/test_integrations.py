"""MNMS for any objective: the ask/tell core (`MNMSAskTell`), the Optuna sampler and the Ray Tune
searcher on toy objectives with a known optimum, checkpoints and transfer, and bad input.

The toy objectives are separable and deterministic: a config scores 0.3 plus 0.6 times the share
of parameters at the optimum's option, so the optimum is the unique maximum (0.9). The Tune run
uses one local cluster of 2 CPUs for the module and Tune's `time_budget_s`, so a hang ends the
run instead of the suite.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import optuna
import pytest
import ray
import torch
from ray import cloudpickle, tune
from ray.tune.search import ConcurrencyLimiter
from tabular_evaluator import SMALL_SPACE, OptimumEvaluator

import mnms_env  # noqa: F401  (registers the envs)
from agents.integrations import MNMSSampler, MNMSSearcher
from agents.mnms import MNMS, MNMSAskTell, MNMSConfig, normalised_advantages

OPTIMUM = {"a": 2, "b": 0, "c": 3, "d": 1, "e": 4}
SPACE = {"a": [0, 1, 2, 3], "b": [0, 1, 2], "c": [0, 1, 2, 3, 4], "d": [0, 1, 2], "e": range(5)}
"""900 configs; uniform sampling finds the optimum in 900 trials on average."""
SMALL = {"a": 2, "b": 0, "c": 1, "d": 2}
"""The Tune run's optimum over 4 parameters of 3 options (81 configs)."""
BEST = 0.9


def score(config: Mapping[str, Any], optimum: Mapping[str, Any] = OPTIMUM) -> float:
    return 0.3 + 0.6 * sum(config[k] == v for k, v in optimum.items()) / len(optimum)


def at_optimum(configs: Sequence[Mapping[str, Any]], optimum: Mapping[str, Any]) -> float:
    """The share of the configs' parameters at the optimum's option (chance: about 0.27 for
    `SPACE`, 1/3 for `SMALL`)."""
    return float(np.mean([[c[k] == v for k, v in optimum.items()] for c in configs]))


def optimise(sampler: optuna.samplers.BaseSampler, trials: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(
        lambda trial: score({k: trial.suggest_categorical(k, list(v)) for k, v in SPACE.items()}),
        n_trials=trials,
    )
    return study


def drive(controller: MNMSAskTell, task: str, n: int) -> None:
    for _ in range(n):
        ticket, config = controller.ask(task)
        controller.tell(ticket, score(config))


# ------------------------------------------------------------------------------ Optuna


def test_the_sampler_finds_the_optimum_where_random_search_does_not() -> None:
    sampler = MNMSSampler(task="toy", seed=0)
    study = optimise(sampler, 120)  # the space: trial 0's parameters
    values = [t.value for t in study.trials]
    assert study.best_value == pytest.approx(BEST) and study.best_params == OPTIMUM
    assert optimise(optuna.samplers.RandomSampler(seed=0), 120).best_value < BEST
    assert at_optimum([t.params for t in study.trials[-30:]], OPTIMUM) > 0.7  # chance: 0.27
    assert np.mean(values[-30:]) > np.mean(values[:30]) + 0.2
    assert sampler.controller.greedy() == OPTIMUM


def test_the_sampler_minimises_drops_pruned_and_failed_trials_and_runs_threads() -> None:
    space = {k: list(v) for k, v in SPACE.items()}
    sampler = MNMSSampler(space, task="toy", config=MNMSConfig(batch_size=4), seed=1)

    def loss(trial: optuna.Trial) -> float:
        config = {k: trial.suggest_categorical(k, v) for k, v in space.items()}
        trial.suggest_float("noise", 0.0, 1.0)  # not categorical: the independent sampler's
        if trial.number % 5 == 1:
            raise optuna.TrialPruned
        if trial.number % 5 == 2:
            raise RuntimeError("a failed trial")
        return 1.0 - score(config)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    with pytest.warns(UserWarning, match="'noise' .*RandomSampler samples it"):
        study.optimize(loss, n_trials=40, n_jobs=2, catch=(RuntimeError,))
    controller = sampler.controller
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 24 and not controller.pending
    assert controller.agent.num_children + len(controller.told) == 24
    negated = {round(-t.value, 9) for t in complete}  # minimised: each value told negated
    assert {round(r.reward, 9) for r in controller.agent.history} <= negated


def test_enqueued_trials_with_other_values_are_not_learned_from() -> None:
    space = {"a": [0, 1, 2], "b": [0, 1]}
    sampler = MNMSSampler(space, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(6):
        study.enqueue_trial({"a": 0})  # "a" fixed; "b" asked from the controller with an "a"
    with pytest.warns(UserWarning, match="ran other values than it sampled"):
        study.optimize(lambda t: sum(t.suggest_categorical(k, v) for k, v in space.items()), 6)
    told = sampler.controller.told
    assert not sampler.controller.pending and 0 < len(told) < 6  # asked a != 0: dropped
    assert all(sampler.controller.config_of(e.actions)["a"] == 0 for e in told)


# ------------------------------------------------------------------------------ the core


def test_outstanding_asks_are_told_in_any_order_and_none_drops_one() -> None:
    controller = MNMSAskTell(SPACE, config=MNMSConfig(batch_size=4), seed=0)
    asks = [controller.ask() for _ in range(6)]
    assert [t for t, _ in asks] == list(range(6)) and len(controller.pending) == 6
    assert all(set(c) == set(SPACE) and c["e"] in range(5) for _, c in asks)
    results = [controller.tell(t, None if t == 4 else score(c)) for t, c in reversed(asks)]
    assert results[:4] == [None] * 4  # 5 (told), 4 (dropped), 3 and 2: three rewards in
    assert results[4] is not None and results[4].num_children == 4  # ticket 1 completes a batch
    assert results[5] is None and len(controller.told) == 1 and not controller.pending
    assert controller.agent.num_updates == 1
    assert [r.reward for r in controller.agent.history] == [score(asks[t][1]) for t in (5, 3, 2, 1)]


def test_the_normalised_advantage_keeps_its_scale_for_negative_rewards() -> None:
    # A loss negated to be maximised: the advantage is the same as for the positive rewards.
    negative = normalised_advantages(torch.tensor([-0.3, -0.9]), torch.tensor([-0.6, -0.6]), 0.01)
    positive = normalised_advantages(torch.tensor([0.9, 0.3]), torch.tensor([0.6, 0.6]), 0.01)
    torch.testing.assert_close(negative, positive)


def test_a_checkpoint_round_trips_with_its_outstanding_asks(tmp_path: Path) -> None:
    config = MNMSConfig(batch_size=4, replay_batch=4)
    controller = MNMSAskTell(SPACE, tasks=["x", "y"], config=config, seed=5)
    for _ in range(3):
        drive(controller, "x", 4)
        drive(controller, "y", 4)
    open_asks = [controller.ask("x") for _ in range(3)]
    controller.tell(open_asks[0][0], 0.5)
    controller.save(tmp_path / "ask-tell.pt")
    restored = MNMSAskTell.load(tmp_path / "ask-tell.pt", SPACE)

    assert restored.tasks == ("x", "y") and restored.pending.keys() == {1 + 24, 2 + 24}
    assert len(restored.told) == 1 and restored.agent.baselines == controller.agent.baselines
    assert restored.agent.history == controller.agent.history
    for name, weight in controller.agent.policy.state_dict().items():
        assert torch.equal(restored.agent.policy.state_dict()[name], weight), name
    # The same RNG state: the same next asks; the same optimizer, replay and told children:
    # the same update.
    assert [restored.ask("y") for _ in range(5)] == [controller.ask("y") for _ in range(5)]
    stats = []
    for c in (controller, restored):
        for ticket, config in open_asks[1:]:
            c.tell(ticket, score(config))
        stats.append(c.tell(29, 0.7))  # the third of the five asks above completes a batch
    assert stats[0] is not None and stats[0].policy_loss == stats[1].policy_loss
    for name, weight in controller.agent.policy.state_dict().items():
        assert torch.equal(restored.agent.policy.state_dict()[name], weight), name

    renamed = {f"p{i}": v for i, v in enumerate(SPACE.values())}
    with pytest.raises(ValueError, match=r"saved over parameters \['a', 'b'"):
        MNMSAskTell.load(tmp_path / "ask-tell.pt", renamed)
    reordered = {name: options[::-1] for name, options in SPACE.items()}  # the same counts
    with pytest.raises(ValueError, match=r"saved with parameter 'a' options \["):
        MNMSAskTell.load(tmp_path / "ask-tell.pt", reordered)


def test_a_controller_pre_trained_on_one_task_starts_another(tmp_path: Path) -> None:
    source = MNMSAskTell(SPACE, tasks="a", config=MNMSConfig(batch_size=4), seed=0)
    drive(source, "a", 96)
    assert source.greedy() == OPTIMUM
    source.save(tmp_path / "a.pt")
    # Parameters of the same option counts, other names: the policy carries over.
    renamed = {name.upper(): options for name, options in SPACE.items()}
    expected = {name.upper(): option for name, option in OPTIMUM.items()}
    mean = MNMSAskTell(renamed, tasks="b", checkpoint=tmp_path / "a.pt", new_task_init="mean")
    assert mean.greedy("b") == expected  # task b starts at task a's mode
    target = MNMSAskTell(renamed, tasks="b", checkpoint=tmp_path / "a.pt", seed=1)
    new, old = (c.agent.policy.task_embedding.weight[0] for c in (target, source))
    assert not torch.equal(new, old)  # a fresh random embedding
    for name, weight in source.agent.policy.state_dict().items():
        if name != "task_embedding.weight":
            assert torch.equal(target.agent.policy.state_dict()[name], weight), name
    for _ in range(8):
        ticket, config = target.ask()
        target.tell(ticket, score({k.lower(): v for k, v in config.items()}))
    assert target.agent.num_updates == 2 and target.agent.history[0].task == "b"
    with pytest.raises(ValueError, match=r"option counts \[4, 3, 5, 3, 5\].*this env has \[3\]"):
        MNMSAskTell({"x": [1, 2, 3]}, tasks="b", checkpoint=tmp_path / "a.pt")


def test_a_checkpoint_s_own_task_is_continued_with_a_warning_and_its_sizes_kept(
    tmp_path: Path,
) -> None:
    """Transferring with the default task name kept the source's embedding: no transfer. A
    `config=` beside `checkpoint=` was refused for a network size the user never set."""
    small = MNMSConfig(batch_size=4, hidden_size=32, learning_rate=1e-2)
    source = MNMSAskTell(SPACE, config=small, seed=0)
    drive(source, "default", 8)
    source_file = tmp_path / "a.pt"
    source.save(source_file)
    with pytest.warns(UserWarning, match=r"tasks \['default'\] are the checkpoint's own"):
        MNMSAskTell(SPACE, checkpoint=source_file)
    config = MNMSConfig(batch_size=2)
    target = MNMSAskTell(SPACE, tasks="new", config=config, checkpoint=source_file)
    assert target.agent.config == replace(config, hidden_size=32)
    with pytest.raises(ValueError, match="hidden_size=16 would resize"):
        MNMSAskTell(SPACE, tasks="new", config=MNMSConfig(hidden_size=16), checkpoint=source_file)


def test_an_env_checkpoint_is_resumed_only_onto_its_own_options(tmp_path: Path) -> None:
    """`MNMSAskTell.load` of an `MNMS` checkpoint checked nothing of the space."""
    optima = {"langid-es": {"width": 64}}
    evaluator = OptimumEvaluator(optima)
    env = gym.make("MNMS-v2", task="langid-es", space=SMALL_SPACE, evaluator=evaluator, store=None)
    MNMS(env, MNMSConfig(batch_size=4), seed=0).learn(4).save(tmp_path / "env.pt")
    assert MNMSAskTell.load(tmp_path / "env.pt", SMALL_SPACE).tasks == ("langid-es",)
    reordered = {d.name: d.options[::-1] for d in SMALL_SPACE.decisions}
    with pytest.raises(ValueError, match="saved with parameter"):
        MNMSAskTell.load(tmp_path / "env.pt", reordered)
    renamed = {d.name.upper(): d.options for d in SMALL_SPACE.decisions}
    with pytest.raises(ValueError, match="was saved over parameters"):
        MNMSAskTell.load(tmp_path / "env.pt", renamed)


def test_a_space_of_functions_resumes_in_any_process(tmp_path: Path) -> None:
    """Options were compared by repr, and a function's holds its address: a checkpoint with
    function options was refused in any other process. The Tune searcher's save could not
    pickle a lambda."""
    space = {"act": [_double, _halve], "lr": [1e-3, 1e-2]}
    MNMSAskTell(space).save(tmp_path / "f.pt")
    saved = torch.load(tmp_path / "f.pt", weights_only=False)["extra"]["options"]
    functions = ["<function _double>", "<function _halve>"]
    assert saved == [["act", functions], ["lr", ["0.001", "0.01"]]]
    assert MNMSAskTell.load(tmp_path / "f.pt", space)
    searcher = MNMSSearcher({"act": [lambda x: x, _halve]}, metric="acc", mode="max")
    searcher.save(str(tmp_path / "tune.pkl"))
    again = MNMSSearcher(metric="acc", mode="max")
    again.restore(str(tmp_path / "tune.pkl"))
    restored = again.controller.space["act"]
    assert restored[0](3) == 3 and restored[1] is _halve


def _double(x: float) -> float:
    return 2 * x


def _halve(x: float) -> float:
    return x / 2


def test_a_study_with_the_sampler_pickles_and_resumes() -> None:
    """Optuna's resume recipes pickle the study (or its sampler); the sampler's lock and a
    lambda inside the controller's env did not pickle."""
    study = optimise(MNMSSampler(SPACE, config=MNMSConfig(batch_size=4)), 8)
    again = pickle.loads(pickle.dumps(study))
    assert again.sampler.controller.agent.num_updates == 2
    again.optimize(
        lambda trial: score({k: trial.suggest_categorical(k, list(v)) for k, v in SPACE.items()}),
        n_trials=4,
    )
    assert len(again.trials) == 12 and again.sampler.controller.agent.num_updates == 3
    assert copy.deepcopy(again.sampler).controller.agent.num_updates == 3


def test_the_sampler_leaves_fixed_parameters_to_optuna() -> None:
    """Under `PartialFixedSampler` the sampler answered for a fixed parameter too, which
    Optuna refuses. A trial whose fixed value is not the controller's is not learned from
    (its reward is another config's), with one warning."""
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        sampler = optuna.samplers.PartialFixedSampler({"a": 1}, MNMSSampler(SPACE))
    with pytest.warns(UserWarning, match="ran other values than it sampled") as caught:
        study = optimise(sampler, 12)
    assert all(t.params["a"] == 1 for t in study.trials) and len(study.trials) == 12
    assert sum("ran other values" in str(w.message) for w in caught) == 1


def test_a_parameter_of_the_space_sampled_independently_is_not_warned_about() -> None:
    """With n_jobs > 1 a trial begun before the space was known samples its parameters
    independently; it was warned about as "not in its categorical space" that held it."""
    sampler = MNMSSampler(SPACE)
    study = optuna.create_study(sampler=sampler)
    trial = study.ask()
    choice = optuna.distributions.CategoricalDistribution([0, 1, 2, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler.sample_independent(study, study._storage.get_trial(trial._trial_id), "a", choice)
    with pytest.warns(UserWarning, match="parameter 'z'"):
        sampler.sample_independent(study, study._storage.get_trial(trial._trial_id), "z", choice)


def test_checkpoints_pass_between_mnms_on_an_env_and_the_integrations(tmp_path: Path) -> None:
    optima = {"langid-es": {"hidden_layers": 2, "width": 64}}
    env = gym.make(
        "MNMS-v2",
        task="langid-es",
        space=SMALL_SPACE,
        evaluator=OptimumEvaluator(optima),
        store=None,
    )
    MNMS(env, MNMSConfig(batch_size=4), seed=0).learn(8).save(tmp_path / "env.pt")
    # A `SearchSpace` works as a space too; every option is valid here (no task modality).
    sampler = MNMSSampler(SMALL_SPACE, task="mine", checkpoint=tmp_path / "env.pt")

    def objective(trial: optuna.Trial) -> float:
        config = {
            d.name: trial.suggest_categorical(d.name, d.options) for d in SMALL_SPACE.decisions
        }
        return float(config["hidden_layers"] == 2) + float(config["width"] == 64)

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, 8)
    assert sampler.controller.agent.num_updates == 2  # the checkpoint's batch size, 4
    assert list(study.trials[0].params) == list(SMALL_SPACE.names)
    sampler.controller.save(tmp_path / "mine.pt")
    MNMS.load(tmp_path / "mine.pt", env).learn(4)  # and back: a transfer to langid-es


# ------------------------------------------------------------------------------ Ray Tune


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """The module's local cluster; the variables Ray sets in this process are unset after it.
    The trainable below reaches the workers by value: they cannot import this test module."""
    environ = dict(os.environ)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    os.environ.clear()
    os.environ.update(environ)


def small_loss(config: dict[str, Any]) -> dict[str, float]:
    """A Tune trainable: 1 - score, over a nested config with a constant."""
    assert config["epochs"] == 3
    flat = {"a": config["net"]["a"], "b": config["net"]["b"], "c": config["c"], "d": config["d"]}
    return {"loss": 1.0 - score(flat, SMALL)}


@pytest.mark.usefixtures("cluster")
def test_the_tune_searcher_finds_the_optimum_under_a_concurrency_limit(tmp_path: Path) -> None:
    searcher = MNMSSearcher(metric="loss", mode="min", config=MNMSConfig(batch_size=4), seed=0)
    choice = tune.choice([0, 1, 2])
    tuner = tune.Tuner(
        small_loss,
        param_space={"net": {"a": choice, "b": choice}, "c": choice, "d": choice, "epochs": 3},
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=2),
            num_samples=48,
            reuse_actors=True,
            time_budget_s=150,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="mnms", verbose=0),
    )
    results = tuner.fit()
    assert len(results) == 48 and not results.errors
    assert results.get_best_result("loss", "min").metrics["loss"] == pytest.approx(1.0 - BEST)
    controller = searcher.controller
    assert sorted(controller.space) == ["c", "d", "net/a", "net/b"] and not controller.pending
    assert controller.agent.num_children == 48
    told = [controller.config_of(r.decisions) for r in controller.agent.history]  # told order
    flat = [{"a": c["net/a"], "b": c["net/b"], "c": c["c"], "d": c["d"]} for c in told]
    assert at_optimum(flat[-16:], SMALL) > 0.5  # chance: 1/3
    for record, config in zip(controller.agent.history, flat, strict=True):
        assert record.reward == pytest.approx(score(config, SMALL) - 1.0)  # "min": -loss

    searcher.save(str(tmp_path / "searcher.pkl"))
    again = MNMSSearcher()
    again.restore(str(tmp_path / "searcher.pkl"))
    assert (again.metric, again.mode) == ("loss", "min")
    assert [again.suggest(f"t{i}") for i in range(4)] == [
        searcher.suggest(f"t{i}") for i in range(4)
    ]
    again.on_trial_complete("t0", {"loss": 0.2})
    assert again.controller.told[-1].reward == pytest.approx(-0.2)


def test_the_searcher_suggests_list_parameters_as_lists() -> None:
    """`widths/0` was unflattened as a dict key: the trainable got {'0': 64, '1': 128}."""
    searcher = MNMSSearcher(metric="acc", mode="max")
    space = {"widths": [128, tune.choice([32, 64])], "lr": 0.1, "net": {"depth": tune.choice([1])}}
    assert searcher.set_search_properties("acc", "max", space)
    suggested = searcher.suggest("0")
    assert suggested["widths"][0] == 128 and suggested["widths"][1] in (32, 64)
    assert (suggested["lr"], suggested["net"]) == (0.1, {"depth": 1})
    assert list(space["widths"][1].categories) == [32, 64]  # the Tuner's own space untouched


def test_the_searcher_takes_tunes_properties_and_drops_errored_trials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    searcher = MNMSSearcher({"x": [1, 2]}, config=MNMSConfig(batch_size=2))
    assert searcher.set_search_properties("acc", "max", {"seed": 1})  # constants only: taken
    assert (searcher.metric, searcher.mode) == ("acc", "max")
    assert not searcher.set_search_properties("acc", "max", {"y": tune.choice([1, 2])})
    # a tensor or 0-d array metric (a training loop's habit) is one number, not a failed trial
    results = [{"acc": 0.5}, {"acc": float("nan")}, None, {"acc": torch.tensor(0.75)}]
    results += [{"acc": np.array(0.25)}, {"acc": "high"}, {"acc": np.float32(0.5)}, {"ac": 1}]
    with caplog.at_level(logging.WARNING, logger="agents.integrations.tune"):
        for i, result in enumerate(results):
            searcher.suggest(str(i))
            searcher.on_trial_complete(str(i), result, error=result is None)
    assert [r.reward for r in searcher.controller.agent.history] == [0.5, 0.75, 0.25, 0.5]
    dropped = [r.getMessage() for r in caplog.records]  # each failed trial but the errored one
    assert len(dropped) == 3 and "trial 7 reported no 'acc' (its result has ['ac'])" in dropped[2]
    searcher.on_trial_complete("never-suggested", {"acc": 1.0})  # ignored, with a warning


# ------------------------------------------------------------------------------ bad input


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="mode='maximize'; accepted: \\['max', 'min'\\]"):
        MNMSSearcher({"x": [1]}, metric="acc", mode="maximize")
    with pytest.raises(ValueError, match="the search space is empty"):
        MNMSAskTell({})
    with pytest.raises(ValueError, match="parameter 'lr' has no options"):
        MNMSAskTell({"lr": []})
    with pytest.raises(ValueError, match="parameter 'act': options must be a list, got 'relu'"):
        MNMSAskTell({"act": "relu"})
    controller = MNMSAskTell({"x": [1, 2]}, tasks=["sst2", "imdb"])
    with pytest.raises(ValueError, match="unknown task 'sst'.*did you mean 'sst2'"):
        controller.ask("sst")
    with pytest.raises(ValueError, match="name the task"):
        controller.ask()
    ticket, _ = controller.ask("imdb")
    with pytest.raises(ValueError, match="unknown ticket 99: .*outstanding tickets: \\[0\\]"):
        controller.tell(99, 0.5)
    with pytest.raises(ValueError, match="a reward is a finite number.*got nan"):
        controller.tell(ticket, float("nan"))
    controller.tell(ticket, 0.5)
    with pytest.raises(ValueError, match="unknown ticket 0: it was never asked or is already"):
        controller.tell(ticket, 0.5)
    with pytest.raises(ValueError, match="'lr' is Float .*tune.choice"):
        MNMSSearcher().set_search_properties("acc", "max", {"lr": tune.loguniform(1e-4, 1e-1)})
    with pytest.raises(ValueError, match=r"grid_search parameters \['bs'\]"):
        MNMSSearcher().set_search_properties("acc", "max", {"bs": tune.grid_search([16, 32])})
    with pytest.raises(RuntimeError, match="no search space"):
        MNMSSearcher(metric="acc", mode="max").suggest("t0")
    with pytest.raises(RuntimeError, match="needs metric and mode"):
        MNMSSearcher({"x": [1]}).suggest("t0")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=MNMSSampler())
    with pytest.raises(ValueError, match="single-objective studies; this one has 2"):
        study.optimize(lambda t: (t.suggest_categorical("x", [1, 2]), 0.0), n_trials=1)
    study = optuna.create_study(sampler=MNMSSampler())
    with pytest.raises(ValueError, match="trial 0, the study's first finished one, has none"):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
