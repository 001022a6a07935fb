"""SB3 agents train on the batched MNMS vector env through `SB3VecEnv`."""

import gymnasium as gym
import numpy as np
import pytest
from sb3_contrib import MaskablePPO
from small_space import SMALL
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv
from test_vector import CountingEvaluator

from agents.sb3 import SB3VecEnv, rollout_episodes, sb3_learn
from mnms_env import Decision, SearchSpace

NUM_ENVS, EPISODES = 4, 2


def make_venv(evaluator):
    venv = gym.make_vec(
        "mnms_env:MNMS-v2",
        num_envs=NUM_ENVS,
        vectorization_mode="vector_entry_point",
        tasks=["wine", "word-sentiment-da"],
        space=SMALL,
        store=None,
        evaluator=evaluator,
    )
    return SB3VecEnv(venv)


def test_adapter_resets_finished_episodes_like_sb3() -> None:
    env = make_venv(CountingEvaluator())
    assert isinstance(env, VecEnv)
    obs = env.reset()
    rng = np.random.default_rng(0)
    for _ in range(len(SMALL)):
        masks = np.stack(env.env_method("action_masks"))
        actions = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
        obs, rewards, dones, infos = env.step(actions)
    assert dones.all() and (rewards > 0.2).all()
    assert not obs["step"].any()  # already reset, SB3-style
    assert all(info["terminal_observation"]["step"] == len(SMALL) for info in infos)
    assert all("child" in info for info in infos)


@pytest.mark.parametrize("algo", [PPO, MaskablePPO])
def test_sb3_agent_learns_on_the_batched_vector_env(algo) -> None:
    evaluator = CountingEvaluator()
    env = make_venv(evaluator)
    if algo is PPO:  # plain PPO samples unmasked actions: map them onto valid ones
        env.set_attr("invalid_action", "wrap")
    model = algo("MultiInputPolicy", env, n_steps=len(SMALL), batch_size=NUM_ENVS * 5, seed=0)
    model.learn(total_timesteps=NUM_ENVS * len(SMALL) * EPISODES)
    assert evaluator.calls == [NUM_ENVS] * EPISODES  # one batched call per step that ends episodes


def test_a_child_count_no_rollout_splits_names_one_that_does() -> None:
    assert rollout_episodes(12, 1) == 6 and rollout_episodes(11, 14) == 1
    with pytest.raises(ValueError, match=r"11 episode\(s\) of 1 step\(s\) .*; 12 can\)"):
        rollout_episodes(11, 1)  # a prime above 8: once advised only "give more children"


def test_set_options_reach_the_reset_and_other_autoreset_modes_are_refused() -> None:
    env = make_venv(CountingEvaluator())
    for _ in range(3):  # without the options the tasks are drawn: all 1 by chance once in 16
        env.set_options({"task": "word-sentiment-da"})
        assert env.reset()["task"].tolist() == [1] * NUM_ENVS  # as SB3's DummyVecEnv does
    env.set_options([{"task": "wine"}, {}, {}, {}])
    with pytest.raises(ValueError, match="different options"):
        env.reset()
    same_step = gym.make_vec(
        "mnms_env:MNMS-v2",
        num_envs=2,
        vectorization_mode="sync",
        task="wine",
        space=SMALL,
        store=None,
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )
    with pytest.raises(ValueError, match="NEXT_STEP autoreset, got autoreset_mode="):
        SB3VecEnv(same_step)
    single = gym.make("mnms_env:MNMS-v2", task="wine", space=SMALL, store=None)
    with pytest.raises(TypeError, match="adapts a Gymnasium vector env, got .*SyncVectorEnv"):
        SB3VecEnv(single)


def test_sb3_learn_refuses_an_env_that_raises_on_unmasked_actions() -> None:
    env = gym.make("mnms_env:MNMS-v2", tasks=["wine", "digits"], backend="table")
    with pytest.raises(ValueError, match="ppo samples actions without the masks.*'wrap'"):
        sb3_learn("ppo", env, 8)
    every = SearchSpace((Decision("width", (16, 32)), Decision("dropout", (0.0, 0.1))))
    valid = gym.make("mnms_env:MNMS-v2", task="wine", space=every, store=None)
    assert sb3_learn("ppo", valid, 2) is not None  # no action is invalid: nothing to wrap
    with pytest.raises(ValueError, match=r"n_steps=3: rollouts must end exactly at the run's 4"):
        sb3_learn("ppo", valid, 2, n_steps=3)  # it failed with QuotaSpent after every child
    with pytest.raises(AssertionError, match="n_steps"):  # SB3's own check, not a modulo by 0
        sb3_learn("ppo", valid, 2, n_steps=0)
