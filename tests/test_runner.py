"""The runner: every controller end to end on cheap real children, with exact budgets."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from small_space import SMALL

from agents.cli import SearchSettings, main
from agents.portfolio import SourceScores
from agents.runner import (
    CONTROLLERS,
    TRANSFER,
    ChildQuota,
    History,
    QuotaSpent,
    RoundRobin,
    run_controller,
)
from agents.tpe import tpe_search
from mnms_env import ResultStore, load_table

TASKS = ("wine", "digits")
CHILDREN = 3


def run(name: str, **kwargs) -> History:
    defaults = {"env_kwargs": {"space": SMALL, "store": None}, "children_per_task": CHILDREN}
    kwargs = defaults | {"seed": 0} | kwargs
    if name in TRANSFER:  # a source whose configs SMALL lacks: the baselines fall back on SMALL's
        kwargs.setdefault("sources", SourceScores.from_tables([load_table("breast-cancer")]))
    return run_controller(name, tasks=TASKS, **kwargs)


@pytest.mark.parametrize("name", CONTROLLERS)
def test_every_controller_gets_exactly_the_same_children(name: str) -> None:
    history = run(name)
    assert len(history.children) == CHILDREN * len(TASKS)
    assert history.per_task() == dict.fromkeys(TASKS, CHILDREN)
    assert [c.request.task for c in history.children] == list(TASKS) * CHILDREN  # round-robin
    assert history.trained == CHILDREN * len(TASKS) and history.cached == 0  # store=None
    results = [c.result for c in history.children]
    assert all(0.0 <= r.val_accuracy <= 1.0 and r.seconds >= 0 for r in results)
    assert history.best("wine").result.val_accuracy > 1 / 3  # three classes: above chance


def test_cache_hits_are_counted_and_not_trained_again(tmp_path: Path) -> None:
    kwargs = {"env_kwargs": {"space": SMALL, "store": tmp_path / "results.sqlite"}}
    first, again = run("random", **kwargs), run("random", **kwargs)
    assert first.trained + first.cached == len(first.children)
    assert again.cached == len(again.children) and again.trained == 0
    assert [c.request for c in again.children] == [c.request for c in first.children]
    saved = json.loads(json.dumps(again.to_dict()))
    assert saved["cached"] == len(again.children) and History.from_dict(saved) == again


def test_tpe_is_seeded_and_samples_only_valid_options() -> None:
    configs = [[c.request.config for c in run("tpe").children] for _ in range(2)]
    assert configs[0] == configs[1]
    assert all(c.representation == "raw" for c in configs[0])  # the only tabular option


def test_tpe_search_keeps_one_study_per_task() -> None:
    env = gym.make("mnms_env:MNMS-v2", tasks=list(TASKS), space=SMALL, store=None)
    history, studies = tpe_search(env, 2, seed=1)
    assert [c["task"] for c in history] == list(TASKS) * 2
    assert {name: len(s.trials) for name, s in studies.items()} == dict.fromkeys(TASKS, 2)
    history, _ = tpe_search(env, 1, seed=1, first_trials={"wine": [[2, 1, 0, 1, 0]]})
    assert (
        history[0]["config"]["hidden_layers"] == 1 and history[0]["config"]["learning_rate"] == 0.03
    )
    with pytest.raises(TypeError, match="tasks takes a list of task names, got the string"):
        tpe_search(env, 1, tasks="wine")
    for bad in ([0, 0, 0, 0, 0], [2, 0, 0]):  # char-hash is no tabular option; too short
        with pytest.raises(ValueError, match=re.escape(f"first_trials['wine'][0] = {bad}: a")):
            tpe_search(env, 1, first_trials={"wine": [bad]})


def test_quota_wrapper_refuses_an_extra_child_and_a_wrong_task() -> None:
    env = ChildQuota(gym.make("mnms_env:MNMS-v2", tasks=list(TASKS), space=SMALL, store=None), 1)
    with pytest.raises(ValueError, match="round-robin"):
        env.reset(options={"task": "digits"})
    for task in TASKS:
        _, info = env.reset()
        assert info["task"] == task
        terminated = False
        while not terminated:
            _, _, terminated, _, info = env.step(int(info["action_mask"].argmax()))
    env.reset()  # SB3 resets after the last episode: allowed, stepping is not
    with pytest.raises(QuotaSpent):
        env.step(0)
    assert [c.request.task for c in env.records] == list(TASKS)


def test_unknown_controller_lists_the_accepted_names() -> None:
    with pytest.raises(ValueError, match="accepted: .*'maskable-ppo'"):
        run("ppo2")
    for name in ("random", "tpe"):  # a setting they would ignore is refused, as mnms's are
        with pytest.raises(ValueError, match=rf"controller_kwargs={{'foo': 1}}: '{name}' takes"):
            run(name, controller_kwargs={"foo": 1})


def test_a_single_task_name_as_tasks_is_refused_not_split_into_letters() -> None:
    with pytest.raises(TypeError, match=r"tasks takes a list of task names, .*'wine'.*\['wine'\]"):
        run_controller("random", tasks="wine", children_per_task=1)
    with pytest.raises(TypeError, match=r"tasks takes a list of task names, .*'wine'"):
        SearchSettings(tasks="wine")  # what `mnms search` saves and benchmarks/main_job.py makes


def test_run_command_writes_the_history(tmp_path: Path) -> None:
    out = tmp_path / "history.json"
    argv = ["run", "random", "--tasks", *TASKS, "--children-per-task", "2", "--budget", "1"]
    assert main([*argv, "--store", str(tmp_path / "r.sqlite"), "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["controller"] == "random" and saved["tasks"] == list(TASKS)
    assert len(saved["children"]) == 4 and saved["trained"] + saved["cached"] == 4


def test_run_command_trains_at_the_precision_asked_for(tmp_path: Path) -> None:
    store = tmp_path / "r.sqlite"
    argv = ["run", "random", "--tasks", "wine", "--children", "2", "--precision", "bf16"]
    assert main([*argv, "--store", str(store), "--out", str(tmp_path / "h.json")]) == 0
    assert {row["device"] for row in ResultStore(store).rows()} == {"cpu bf16"}


def test_custom_agent_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(Path(__file__).parents[1] / "examples" / "custom_agent.py"))
    out = capsys.readouterr().out
    assert "toy-sentiment ->" in out and "wine ->" in out


def test_the_mnms_schedule_refuses_one_episode_more_and_bad_counts() -> None:
    schedule = RoundRobin(("wine", "digits"), 2)
    assert [schedule() for _ in range(4)] == ["wine", "digits", "wine", "digits"]
    with pytest.raises(QuotaSpent, match="has had its 2 children"):
        schedule()
    for name in ("mnms", "random"):
        with pytest.raises(ValueError, match="children_per_task must be an int >= 1, got 0"):
            run(name, children_per_task=0)
        with pytest.raises(ValueError, match="children_per_task must be an int >= 1, got True"):
            run(name, children_per_task=True)


@pytest.mark.parametrize("name", ["mnms", "random", "tpe"])
def test_numpy_counts_run_and_the_history_is_plain_json(name: str) -> None:
    """A numpy seed failed inside each controller, a numpy budget made the history unwritable."""
    history = run(name, children_per_task=np.int64(2), seed=np.int64(3), budget=np.int64(1))
    assert json.loads(json.dumps(history.to_dict()))["seed"] == 3 and history.budget == 1


def test_the_quota_holds_on_one_shot_episodes_stepped_without_reset() -> None:
    """A one-shot env trained a child at every step after the first, without a reset: past
    the quota and outside the round-robin."""
    one_shot = gym.make("mnms_env:MNMS-OneShot-v2", tasks=list(TASKS), space=SMALL, store=None)
    env = ChildQuota(one_shot, 1)
    _, info = env.reset()
    masks = np.split(info["action_mask"], np.cumsum(SMALL.sizes)[:-1])
    action = [int(mask.argmax()) for mask in masks]  # the first valid option of each
    env.step(np.array(action))
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.array(action))
    assert len(env.records) == 1
