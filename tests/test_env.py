import itertools
import json
import pickle
import re
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from small_space import SMALL
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import mnms_env
from agents.random_search import masked_uniform
from agents.runner import ChildQuota
from mnms_env import (
    BatchedEvaluator,
    CachedEvaluator,
    ChildConfig,
    ChildRequest,
    ResultStore,
    SequentialEvaluator,
)


def make(env_id: str = "MNMS-v2", **kwargs):
    kwargs = {"task": "wine", "space": SMALL, "store": None} | kwargs
    return gym.make(f"mnms_env:{env_id}", **kwargs)


def rollout(env, seed: int, options=None) -> tuple[list, float, dict]:
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed, options=options)
    observations, done = [obs], False
    while not done:
        obs, reward, done, truncated, info = env.step(masked_uniform(info["action_mask"], rng))
        assert not truncated
        observations.append(obs)
    return observations, reward, info


def test_make_without_prior_import_and_spaces() -> None:
    env = make()
    assert env.unwrapped.space is SMALL
    assert env.action_space == gym.spaces.Discrete(3)
    obs, info = env.reset(seed=0)
    assert obs["step"] == 0 and obs["task"] == 0 and not obs["decisions"].any()
    assert info["task"] == "wine"
    assert info["action_mask"].tolist() == [False, False, True]  # only "raw" on tabular data
    assert env.unwrapped.action_masks().tolist() == info["action_mask"].tolist()


def test_the_old_env_ids_name_the_new_ones() -> None:
    """v1 and v2 changed the default space; code written for an older id is told the new one."""
    for kind, version in itertools.product(("MNMS", "MNMS-OneShot"), (0, 1)):
        with pytest.raises(gym.error.DeprecatedEnv, match=f"{kind}-v2"):
            gym.make(f"mnms_env:{kind}-v{version}", task="wine")


def test_episode_trains_a_child_and_reports_it(tmp_path: Path) -> None:
    env = make(store=tmp_path / "r.sqlite", budget=2)
    observations, reward, info = rollout(env, 0)
    assert len(observations) == len(SMALL) + 1
    assert all(o["step"] == i for i, o in enumerate(observations))
    child = info["child"]
    assert reward == child["val_accuracy"] and 0.3 < reward <= 1.0
    assert child["config"]["representation"] == "raw" and child["budget"] == 2
    assert {"test_accuracy", "seconds", "parameters", "device", "diverged"} <= set(child)
    assert child["cached"] is False
    _, again, info = rollout(env, 0)
    assert info["child"]["cached"] is True and again == reward
    assert len(ResultStore(tmp_path / "r.sqlite")) == 1


def test_store_is_shared_across_env_instances(tmp_path: Path) -> None:
    _, reward, _ = rollout(make(store=tmp_path / "r.sqlite"), 3)
    _, again, info = rollout(make(store=str(tmp_path / "r.sqlite")), 3)
    assert info["child"]["cached"] and again == reward


def test_rewards_are_zero_until_the_last_decision() -> None:
    env = make()
    _, info = env.reset(seed=1)
    rewards = []
    for _ in SMALL.decisions:
        _, reward, done, _, info = env.step(int(np.flatnonzero(info["action_mask"])[0]))
        rewards.append(reward)
    assert done and rewards[:-1] == [0.0] * (len(SMALL) - 1) and rewards[-1] > 0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_invalid_action_raises_with_the_valid_range() -> None:
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"decision 'representation'.*valid actions are \[2\]"):
        env.step(0)


def test_an_action_that_is_not_an_integer_is_refused_not_truncated() -> None:
    env = make()
    env.reset(seed=0)
    for action in (2.9, np.float32(2.0), "2", np.array([2])):
        with pytest.raises(TypeError, match="an action is an integer option index"):
            env.step(action)
    env.step(np.array(2))  # a 0-d integer array is an integer
    one_shot = make("MNMS-OneShot-v2")
    one_shot.reset(seed=0)
    with pytest.raises(TypeError, match="integer option indices"):
        one_shot.step(np.full(len(SMALL), 0.5))


def test_an_unknown_task_is_named_by_card_of_and_masks_of() -> None:
    env = make().unwrapped
    for method in (env.card_of, env.masks_of):
        with pytest.raises(
            ValueError, match=r"'digits' is not a task of this env; accepted: \['wine'\]"
        ):
            method("digits")


@pytest.mark.parametrize("backend", ["train", "table"])
@pytest.mark.parametrize("kwargs", [{"task": ["wine"]}, {"task": 3}, {"tasks": ["wine", 3]}])
def test_a_task_name_that_is_not_a_string_is_named(backend: str, kwargs: dict) -> None:
    """A list for task= failed as `unhashable type`, an int with the table backend deep in
    urllib's quote."""
    bad = kwargs.get("task", 3)
    with pytest.raises(TypeError, match=rf"a task name is a str, got \w+ {re.escape(repr(bad))}"):
        gym.make("mnms_env:MNMS-v2", backend=backend, **kwargs)


def test_a_file_task_edited_while_the_env_lives_trains_on_the_new_data(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    rows = [{"text": f"word{i % 7} other{i % 3}", "label": i % 2} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = make(task=f"jsonl:{path}", space=None, store=tmp_path / "r.sqlite")
    _, _, first = rollout(env, 0)
    path.write_text(path.read_text() + "".join(json.dumps(r) + "\n" for r in rows[:10]))
    _, _, second = rollout(env, 0)  # once: "make the request again from the task as it is now"
    assert second["child"]["fingerprint"] != first["child"]["fingerprint"]
    assert not second["child"]["cached"]
    assert env.unwrapped.card_of(f"jsonl:{path}").fingerprint == second["child"]["fingerprint"]


def test_invalid_action_wrap_maps_to_a_valid_option() -> None:
    env = make(invalid_action="wrap")
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(0)
    assert obs["decisions"][0] == 3  # "raw" (+1)


def test_multitask_episodes_draw_and_pick_tasks() -> None:
    env = make(task=None, tasks=["wine", "langid-es"])
    seen = {env.reset(seed=s)[1]["task"] for s in range(12)}
    assert seen == {"wine", "langid-es"}
    obs, info = env.reset(options={"task": "langid-es"})
    assert obs["task"] == 1 and info["task"] == "langid-es"
    assert info["action_mask"].tolist() == [True, True, False]
    with pytest.raises(ValueError, match="not a task of this env"):
        env.reset(options={"task": "digits"})


def test_same_seed_same_episode() -> None:
    a = rollout(make(tasks=["wine", "digits"], task=None), 7)
    b = rollout(make(tasks=["wine", "digits"], task=None), 7)
    assert a[1] == b[1]
    assert [o["decisions"].tolist() for o in a[0]] == [o["decisions"].tolist() for o in b[0]]


@pytest.mark.parametrize("env_id", ["MNMS-v2", "MNMS-OneShot-v2"])
def test_env_checkers(env_id: str, tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    env = make(env_id, invalid_action="wrap", store=store)
    if env_id == "MNMS-OneShot-v2":
        # The determinism check trains one child twice; a warm store makes `cached` and
        # `seconds` equal the second time, as they are for any repeated request.
        action_space = env.action_space
        action_space.seed(123)
        env.reset(seed=123)
        env.step(action_space.sample())
    check_env(env.unwrapped)  # renders every listed mode, each in an env made from the spec
    sb3_check_env(env.unwrapped, warn=True)


def test_one_shot_designs_the_whole_child() -> None:
    env = make("MNMS-OneShot-v2", task="langid-es", budget=1)
    obs, info = env.reset(seed=0)
    assert info["action_mask"].shape == (sum(SMALL.sizes),)
    obs, reward, terminated, truncated, info = env.step(np.array([0, 1, 1, 0, 1]))
    assert terminated and not truncated and reward == info["child"]["val_accuracy"]
    assert info["child"]["config"]["representation"] == "char-hash"
    with pytest.raises(RuntimeError, match="the episode has ended .or none began.; call reset"):
        env.step(np.array([0, 1, 1, 0, 1]))  # it trained another child, outside any schedule
    env.reset(seed=0)
    with pytest.raises(ValueError, match="'representation'"):
        env.step(np.array([2, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"5 option indices, got shape \(1, 5\)"):
        env.step(np.array([[0, 1, 1, 0, 1]]))


def test_one_shot_renders_the_decisions_it_was_given() -> None:
    """It showed the decisions of the canonical config: options a child without hidden layers
    ignores were drawn as their defaults, not as chosen."""
    action = [1, 1, 0, 1, 2, 1, 0, 0, 0]  # no hidden layers: width, activation, dropout unused
    frames = []
    for env_id in ("MNMS-v2", "MNMS-OneShot-v2"):
        env = gym.make(f"mnms_env:{env_id}", task="langid-es", backend="table", render_mode="ansi")
        env.reset(seed=0)
        for a in action if env_id == "MNMS-v2" else [np.array(action)]:
            env.step(a)
        frames.append(env.render())
    assert frames[0] == frames[1] and "gelu" in frames[0]


def test_the_masks_an_env_returns_are_read_only() -> None:
    """One caller's edit of a returned mask made every env of the process refuse that option."""
    env = gym.make("mnms_env:MNMS-v2", task="langid-es", backend="table")
    env.reset(seed=0)
    for mask in (env.unwrapped.task_masks(), env.unwrapped.masks_of("langid-es")):
        with pytest.raises(ValueError, match="read-only"):
            mask[0, 0] = False
    assert make().unwrapped.task_masks().flags.writeable is False
    assert pickle.loads(pickle.dumps(env)).unwrapped.task_masks().flags.writeable is False


@pytest.mark.parametrize(
    ("options", "match"),
    [({"Task": "wine"}, r"only key is 'task', got \{'Task': 'wine'\}"), (["wine"], "a dict")],
)
def test_reset_options_other_than_a_task_are_refused(options, match: str) -> None:
    env = make(tasks=["wine", "digits"], task=None)
    env.reset(seed=0)
    state = env.unwrapped.np_random.bit_generator.state
    with pytest.raises(ValueError, match=match):
        env.reset(seed=5, options=options)
    assert env.unwrapped.np_random.bit_generator.state == state  # refused before reseeding
    with pytest.raises(ValueError, match="reset options are a dict whose only key is 'task'"):
        ChildQuota(env, 1).reset(options=options)


def test_pickle_round_trip() -> None:
    env = make(tasks=["wine", "langid-es"], task=None)
    env.reset(seed=0)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.unwrapped.task_names == ("wine", "langid-es")
    assert rollout(clone, 5)[1] == rollout(env, 5)[1]


def test_default_space_and_flatten_observation() -> None:
    env = gym.wrappers.FlattenObservation(gym.make("mnms_env:MNMS-v2", task="digits", store=None))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert env.unwrapped.space == mnms_env.default_space()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget": 0}, "budget"),
        ({"budget": 1.5}, "budget"),
        ({"child_seeds": True}, "child_seeds must be an int >= 1, got True"),
        ({"task": "langid-ez"}, "(?i)did you mean"),
        ({"invalid_action": "clip"}, "invalid_action"),
        ({"task": None, "tasks": "wine"}, "list of task names"),
        ({"task": None, "tasks": []}, r"non-empty list of distinct names, got \[\]"),
        ({"precision": "fp16"}, "precision must be one of"),
        ({"device": "gpu"}, "device='gpu' is not a torch device"),
        ({"evaluator": SequentialEvaluator(), "precision": "bf16"}, "configure the default"),
        ({"backend": "table", "space": None, "device": "cpu"}, "configure the default"),
        ({"space": [1, 2]}, "space= must be None or an instance of SearchSpace, got list"),
        (
            {"evaluator": "seq"},
            "evaluator= must be None or an instance of Evaluator, got str 'seq'",
        ),
        ({"store": 5}, "store= takes a path, a ResultStore or None, got int 5"),
        ({"table_dir": "tables"}, "table_dir='tables' is read by backend='table' only"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        make(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_a_cuda_device_without_cuda_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="CUDA is not available here"):
        make(device="cuda")


def test_a_child_requested_twice_in_one_batch_is_trained_once(tmp_path: Path) -> None:
    class Counting(SequentialEvaluator):
        trained = 0

        def stream(self, requests):
            self.trained += len(requests)
            return super().stream(requests)

    request = ChildRequest.for_task(
        "wine", ChildConfig(representation="raw", representation_size=0)
    )
    evaluator = Counting(device="cpu")
    for store in (None, ResultStore(tmp_path / "r.sqlite")):
        evaluator.trained = 0
        children = CachedEvaluator(evaluator, store).children([request, request])
        assert evaluator.trained == 1
        assert [child.cached for child in children] == [False, True]
        assert children[0].result == children[1].result


@pytest.mark.parametrize("evaluator_class", [SequentialEvaluator, BatchedEvaluator])
def test_an_interrupted_call_keeps_the_children_it_trained(evaluator_class, tmp_path) -> None:
    class Interrupted(evaluator_class):
        """Stops the call (as Ctrl-C would) once the first child is trained."""

        def stream(self, requests):
            for pair in super().stream(requests):
                yield pair
                raise KeyboardInterrupt

    config = ChildConfig(representation="raw", representation_size=0)
    requests = [  # two batch sizes: two groups for the batched evaluator
        ChildRequest.for_task("wine", replace(config, batch_size=size)) for size in (16, 32)
    ]
    store = ResultStore(tmp_path / "r.sqlite")
    with pytest.raises(KeyboardInterrupt):
        CachedEvaluator(Interrupted(device="cpu"), store).children(requests)
    children = CachedEvaluator(evaluator_class(device="cpu"), store).children(requests)
    assert sorted(child.cached for child in children) == [False, True]


def test_next_task_sets_each_reset_task_including_the_vector_envs_autoresets() -> None:
    order = iter(["digits", "wine", "wine", "digits", "wine", "digits"])
    envs = gym.make_vec(
        "mnms_env:MNMS-v2",
        num_envs=3,
        vectorization_mode="vector_entry_point",
        tasks=["wine", "digits"],
        space=SMALL,
        store=None,
        next_task=lambda: next(order),
    )
    _, info = envs.reset(seed=0)
    assert list(info["task"]) == ["digits", "wine", "wine"]
    for _ in range(len(SMALL) + 1):  # one episode, then the step that autoresets all three
        _, _, _, _, info = envs.step(info["action_mask"].argmax(axis=1))
    assert list(info["task"]) == ["digits", "wine", "digits"]
    env = make(task=None, tasks=["wine", "digits"], next_task=lambda: "langid-es")
    with pytest.raises(ValueError, match="next_task\\(\\) asked for task 'langid-es'"):
        env.reset(seed=0)
    assert (
        make(task=None, tasks=["wine", "digits"], next_task=lambda: "wine").reset(
            options={"task": "digits"}
        )[1]["task"]
        == "digits"
    )  # the options win
