import gymnasium as gym
import numpy as np
import pytest
from small_space import SMALL

from agents.random_search import masked_uniform
from mnms_env.batched import BatchedEvaluator
from mnms_env.vector import MNMSVectorEnv


class CountingEvaluator(BatchedEvaluator):
    """The real batched evaluator, recording how many children each call trains."""

    def __init__(self) -> None:
        super().__init__(device="cpu")
        self.calls: list[int] = []

    def stream(self, requests):
        self.calls.append(len(requests))
        return super().stream(requests)


def make_vec(num_envs: int = 3, **kwargs):
    kwargs = {"tasks": ["wine", "digits"], "space": SMALL, "store": None} | kwargs
    return gym.make_vec(
        "mnms_env:MNMS-v2", num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs
    )


def run_episode(envs, rng: np.random.Generator, masks: np.ndarray | None = None):
    masks = envs.action_masks() if masks is None else masks
    for _ in range(len(SMALL)):
        actions = np.array([masked_uniform(m, rng) for m in masks])
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        masks = infos["action_mask"]
    return obs, rewards, terminated, truncated, infos


def test_make_vec_returns_the_lockstep_env_with_batched_spaces() -> None:
    envs = make_vec()
    assert isinstance(envs.unwrapped, MNMSVectorEnv)
    assert envs.action_space == gym.spaces.MultiDiscrete([3, 3, 3])
    obs, infos = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    assert obs["decisions"].shape == (3, len(SMALL)) and not obs["step"].any()
    assert infos["action_mask"].shape == (3, 3)


def test_finished_children_of_a_step_train_in_one_call(tmp_path) -> None:
    evaluator = CountingEvaluator()
    envs = make_vec(4, evaluator=evaluator, store=tmp_path / "r.sqlite")
    envs.reset(seed=0)
    _, rewards, terminated, truncated, infos = run_episode(envs, np.random.default_rng(0))
    assert terminated.all() and not truncated.any()
    assert evaluator.calls == [4]
    np.testing.assert_allclose(rewards, infos["child"]["val_accuracy"])
    assert (rewards > 0.2).all() and not infos["child"]["cached"].any()
    # Same seeds, same designs: the store answers and nothing is trained again.
    envs.reset(seed=0)
    _, again, *_, infos = run_episode(envs, np.random.default_rng(0))
    assert evaluator.calls == [4] and infos["child"]["cached"].all()
    np.testing.assert_allclose(again, rewards)


def test_precision_reaches_the_default_batched_evaluator() -> None:
    envs = make_vec(2, precision="bf16")
    envs.reset(seed=0)
    *_, infos = run_episode(envs, np.random.default_rng(0))
    assert envs.unwrapped.evaluator.precision == "bf16"
    assert list(infos["child"]["device"]) == ["cpu bf16"] * 2


def test_workers_train_the_default_evaluator_and_close_ends_them() -> None:
    envs = make_vec(2, workers=2)
    envs.reset(seed=0)
    _, rewards, *_ = run_episode(envs, np.random.default_rng(0))
    evaluator = envs.unwrapped.evaluator
    assert evaluator.workers == 2 and evaluator._pool is not None
    envs.close()
    assert evaluator._pool is None
    inline = make_vec(2)  # the same children in this process: the same rewards
    inline.reset(seed=0)
    np.testing.assert_allclose(run_episode(inline, np.random.default_rng(0))[1], rewards)


def test_workers_without_a_default_evaluator_are_refused() -> None:
    with pytest.raises(ValueError, match="workers=2 sizes the default BatchedEvaluator"):
        make_vec(2, workers=2, evaluator=CountingEvaluator())


def test_next_step_autoreset() -> None:
    envs = make_vec(2)
    envs.reset(seed=1)
    run_episode(envs, np.random.default_rng(1))
    obs, rewards, terminated, _, infos = envs.step(np.zeros(2, dtype=np.int64))
    assert not terminated.any() and not rewards.any()
    assert not obs["step"].any() and not obs["decisions"].any()  # the action was ignored
    assert "child" not in infos


def test_an_invalid_action_moves_no_sub_env() -> None:
    envs = make_vec(2)
    _, infos = envs.reset(seed=0)
    valid = [int(np.flatnonzero(m)[0]) for m in infos["action_mask"]]
    with pytest.raises(ValueError, match="action 99 is invalid"):
        envs.step(np.array([valid[0], 99]))
    obs, *_ = envs.step(np.array(valid))
    assert obs["step"].tolist() == [1, 1]  # still in lockstep: sub-env 0 did not move twice


def test_it_refuses_a_step_before_reset_after_close_or_of_the_wrong_length() -> None:
    """Its sub-envs are bare MNMSEnvs (no OrderEnforcing): a step before reset played whole
    episodes on one task and child seed, and one after close started a new worker pool."""
    envs = make_vec(np.int64(3))  # numpy ints are counts too
    with pytest.raises(gym.error.ResetNeeded, match="call reset"):
        envs.step(np.zeros(3, dtype=np.int64))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"one action per sub-env \(3\), got .* shape \(2,\)"):
        envs.step(np.zeros(2, dtype=np.int64))
    envs.close()
    for call in (lambda: envs.reset(seed=0), lambda: envs.step(np.zeros(3, dtype=np.int64))):
        with pytest.raises(gym.error.ClosedEnvironmentError, match="is closed"):
            call()


def test_same_seed_same_tasks_and_rewards() -> None:
    a, b = make_vec(3), make_vec(3)
    obs_a, _ = a.reset(seed=5)
    obs_b, _ = b.reset(seed=5)
    assert obs_a["task"].tolist() == obs_b["task"].tolist()
    ra = run_episode(a, np.random.default_rng(2))[1]
    rb = run_episode(b, np.random.default_rng(2))[1]
    np.testing.assert_allclose(ra, rb)


def test_numpy_seeds_seed_as_ints_and_a_bool_seed_is_refused() -> None:
    envs = make_vec(3)
    tasks = envs.reset(seed=5)[0]["task"].tolist()
    assert envs.reset(seed=np.int64(5))[0]["task"].tolist() == tasks
    assert envs.reset(seed=np.arange(5, 8))[0]["task"].tolist() == tasks
    assert envs.reset(seed=[5, 6, None])[0]["task"].tolist()[:2] == tasks[:2]
    for bad in (True, "5", 5.0, [True, False, True], b"abc", np.array(5), [5, 6, 7.0]):
        with pytest.raises(TypeError, match=r"seed=.*accepted are None, an int, or one int"):
            envs.reset(seed=bad)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_gymnasium_vector_envs_over_mnms_keep_working(mode: str, tmp_path) -> None:
    envs = gym.make_vec(
        "mnms_env:MNMS-v2",
        num_envs=2,
        vectorization_mode=mode,
        task="wine",
        space=SMALL,
        store=str(tmp_path / "r.sqlite"),
        # Spawned workers (fresh processes); tests/test_clients.py runs forked ones.
        vector_kwargs={"context": "spawn"} if mode == "async" else {},
    )
    _, infos = envs.reset(seed=0)
    _, rewards, terminated, *_ = run_episode(envs, np.random.default_rng(0), infos["action_mask"])
    assert terminated.all() and (rewards > 0.2).all()
    envs.close()


@pytest.mark.parametrize("mode", ["vector_entry_point", "sync"])
def test_mixed_dense_and_bag_children_in_one_step(mode: str) -> None:
    """Sub-envs finishing a raw (size 0) and a hashed child together merge into one info."""
    envs = gym.make_vec(
        "mnms_env:MNMS-v2",
        num_envs=4,
        vectorization_mode=mode,
        tasks=["wine", "word-sentiment-da"],
        space=SMALL,
        store=None,
    )
    obs, infos = envs.reset(seed=3)
    assert len(set(obs["task"].tolist())) == 2
    *_, infos = run_episode(envs, np.random.default_rng(3), infos["action_mask"])
    sizes = infos["child"]["config"]["representation_size"]
    assert 0 in sizes.tolist() and 4096 in sizes.tolist()
    envs.close()
