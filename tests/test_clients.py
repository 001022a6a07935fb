"""The clients users bring: forked vector-env workers, Gymnasium's render API, SB3's helpers.

Every scenario that could hang runs in a subprocess under a time limit, so a regression fails
the test instead of hanging the suite.
"""

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from sb3_contrib import MaskablePPO
from small_space import SMALL
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from agents.random_search import masked_uniform
from agents.sb3 import SB3VecEnv
from mnms_env import (
    ChildConfig,
    Decision,
    Featurizer,
    ResultStore,
    SearchSpace,
    make_task,
    register_featurizer,
    render,
)
from mnms_env.env import MNMSEnv
from mnms_env.features import FEATURIZERS

ROOT = Path(__file__).resolve().parents[1]
SCENARIO_SECONDS = 180
"""Each forked scenario finishes in well under a minute; a hang is cut off here."""

# The parent uses torch (a trained child, and a product big enough to start torch's intra-op
# thread pool) before it forks: the state in which forked workers used to hang.
WARM_PARENT = """
import gymnasium as gym
import numpy as np
import torch
import mnms_env
from mnms_env import BatchedEvaluator
from small_space import SMALL

torch.set_num_threads(2)  # a pool to go stale in the fork, whatever the machine or environment
assert torch.get_num_threads() == 2

def make(task, **kwargs):
    return gym.make("MNMS-v2", task=task, space=SMALL, store=None, **kwargs)

env = make("wine")
_, info = env.reset(seed=0)
done = False
while not done:
    _, reward, done, _, info = env.step(int(np.flatnonzero(info["action_mask"])[-1]))
assert 0 < reward <= 1, reward
torch.randn(512, 512) @ torch.randn(512, 512)
"""

ASYNC_FORK = """
import os
from multiprocessing import get_start_method

assert get_start_method() == "fork", get_start_method()
envs = gym.vector.AsyncVectorEnv(  # default context: fork
    [lambda: make("wine"), lambda: make("digits", evaluator=BatchedEvaluator(device="cpu"))]
)
_, infos = envs.reset(seed=0)
rng = np.random.default_rng(0)
for _ in range(len(SMALL)):
    actions = [rng.choice(np.flatnonzero(m)) for m in infos["action_mask"]]
    _, rewards, terminated, _, infos = envs.step(np.array(actions))
envs.close()
assert terminated.all() and ((rewards > 0) & (rewards <= 1)).all(), rewards
pid = os.fork()
if pid == 0:
    os._exit(torch.get_num_threads())
_, status = os.waitpid(pid, 0)
print("rewards", *rewards, "forked threads", os.waitstatus_to_exitcode(status))
"""

SB3_FORK = """
from sb3_contrib import MaskablePPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

venv = make_vec_env(
    "MNMS-v2",
    n_envs=2,
    env_kwargs={"tasks": ["wine", "digits"], "space": SMALL, "store": None},
    vec_env_cls=SubprocVecEnv,
    vec_env_kwargs={"start_method": "fork"},
)
model = MaskablePPO("MultiInputPolicy", venv, n_steps=len(SMALL), batch_size=10, seed=0)
model.learn(total_timesteps=2 * len(SMALL))
rewards = [episode["r"] for episode in model.ep_info_buffer]
venv.close()
assert len(rewards) == 2 and all(0 < r <= 1 for r in rewards), rewards
print("rewards", *rewards)
"""


def run_scenario(code: str) -> str:
    """Run `code` after `WARM_PARENT` in a fresh interpreter; fail (never hang) past the limit.
    The scenario runs in its own session so that hung workers are killed with it."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    env["PYTHONUNBUFFERED"] = "1"  # what a hung scenario printed reaches the failure message
    # and so do its threads' stacks, dumped shortly before the limit
    stacks = f"import faulthandler\nfaulthandler.dump_traceback_later({SCENARIO_SECONDS - 20})\n"
    process = subprocess.Popen(
        [sys.executable, "-c", stacks + textwrap.dedent(WARM_PARENT) + textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=SCENARIO_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the scenario hung (killed after {SCENARIO_SECONDS} s):\n{output}")
    assert process.returncode == 0, output
    return output.strip().splitlines()[-1]


# --------------------------------------------------------------------------------------------
# 1. Forked workers


@pytest.mark.skipif(
    multiprocessing.get_start_method() != "fork", reason="the default start method is not fork"
)
def test_async_vector_env_forked_after_torch_ran_trains_its_children() -> None:
    """Workers forked from a process whose torch thread pool runs train on one thread, with
    the sequential (forward and backward) and the batched evaluator alike."""
    words = run_scenario(ASYNC_FORK).split()
    assert words[0] == "rewards" and words[-2:] == ["threads", "1"]
    assert all(0 < float(r) <= 1 for r in words[1:3])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_sb3_subproc_vec_env_with_fork_learns() -> None:
    words = run_scenario(SB3_FORK).split()
    assert words[0] == "rewards" and len(words) == 3


# --------------------------------------------------------------------------------------------
# 2. Gymnasium's render API


def make(env_id: str = "MNMS-v2", **kwargs):
    kwargs = {"task": "wine", "space": SMALL, "store": None} | kwargs
    return gym.make(f"mnms_env:{env_id}", **kwargs)


def frames_of_an_episode(env, seed: int = 0) -> tuple[list, dict]:
    """`render()` after the reset and after every step of one random valid episode, and the
    last step's info."""
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    frames, done = [env.render()], False
    while not done:
        if isinstance(env.action_space, gym.spaces.MultiDiscrete):  # one-shot: every decision
            action = np.array([masked_uniform(m, rng) for m in env.unwrapped.task_masks()])
        else:
            action = masked_uniform(info["action_mask"], rng)
        _, _, done, _, info = env.step(action)
        frames.append(env.render())
    return frames, info


@pytest.mark.parametrize("render_mode", ["ansi", "rgb_array"])
@pytest.mark.parametrize("env_id", ["MNMS-v2", "MNMS-OneShot-v2"])
def test_every_render_mode_passes_both_checkers_without_a_warning(
    env_id: str, render_mode: str, tmp_path
) -> None:
    """(tests/test_env.py checks an env made without a render mode.)"""
    assert MNMSEnv.metadata["render_modes"] == ["ansi", "rgb_array"]
    store = ResultStore(tmp_path / "r.sqlite")
    env = make(env_id, invalid_action="wrap", store=store, render_mode=render_mode)
    if env_id == "MNMS-OneShot-v2":  # a warm store makes the determinism check's repeat equal
        env.action_space.seed(123)
        env.reset(seed=123)
        env.step(env.action_space.sample())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # both checkers warn about what they find
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped, warn=True, skip_render_check=False)


def test_ansi_shows_the_task_the_decisions_and_the_trained_child(tmp_path) -> None:
    env = make(tasks=["wine", "digits"], task=None, render_mode="ansi", store=tmp_path / "r.db")
    frames, info = frames_of_an_episode(env)
    task = info["task"]
    assert all(isinstance(f, str) and f.startswith(f"task {task!r}") for f in frames)
    assert "decisions 0/5" in frames[0] and frames[0].count("= ?") == len(SMALL)
    assert "decisions 2/5" in frames[2] and frames[2].count("= ?") == len(SMALL) - 2
    assert "  representation = raw\n" in frames[2] and "val " not in frames[2]
    last, child = frames[-1], info["child"]
    assert "= ?" not in last and f"child: {ChildConfig(**child['config']).describe()}" in last
    assert f"val {child['val_accuracy']:.4f}  test {child['test_accuracy']:.4f}" in last
    assert f"{child['parameters']:,} parameters  trained\n" in last
    assert frames_of_an_episode(env)[0][-1].endswith("from the store\n")  # same seed: cached
    (before, after), _ = frames_of_an_episode(make("MNMS-OneShot-v2", render_mode="ansi"))
    assert "decisions 0/5" in before and "decisions 5/5" in after and "= ?" not in after


def test_rgb_array_draws_the_child_and_changes_as_it_is_designed() -> None:
    env = make(render_mode="rgb_array", task="digits")
    frames, _ = frames_of_an_episode(env)
    assert all(f.shape == (450, 800, 3) and f.dtype == np.uint8 for f in frames)
    assert all(len(np.unique(f.reshape(-1, 3), axis=0)) > 10 for f in frames)  # not blank
    assert all((a != b).any() for a, b in zip(frames, frames[1:], strict=False))
    one_shot, _ = frames_of_an_episode(make("MNMS-OneShot-v2", render_mode="rgb_array"))
    assert len(one_shot) == 2 and (one_shot[0] != one_shot[1]).any()


def test_the_picture_draws_a_text_cnn_and_a_featurizer_without_a_size() -> None:
    cnn = dict(representation="tokens", representation_size=4096, filter_widths=(2, 3))
    cnn |= dict(hidden_layers=0, filters=64, embedding_dim=32, dropout=0.5)
    space = SearchSpace(tuple(Decision(name, (value,)) for name, value in cnn.items()))
    task = make_task("langid-es")
    titles = [box[:2] for box in render.layout(scene(task, space, len(space)))]
    assert titles == [
        ("input", "tokens\n4096 words"),
        ("text CNN", "random 32d\n64 x width 2-3\nrelu\ndropout 0.5"),
        ("output", f"{task.num_classes} classes"),
    ]
    half = [box[:2] for box in render.layout(scene(task, space, 1))][1]
    assert half == ("text CNN", "random ?d\n? x width ?\nrelu\ndropout ?")
    sizeless = SearchSpace((Decision("representation", ("raw",)),))
    assert render.layout(scene(make_task("wine"), sizeless, 1))[0][1] == "raw\n(dense)"
    register_featurizer("char-bag", Featurizer("text", bag=True, sized=False, compute=_no_call))
    try:
        bag = SearchSpace((Decision("representation", ("char-bag",)),))
        assert render.layout(scene(task, bag, 1))[0][1] == "char-bag\n(sparse)"
    finally:
        del FEATURIZERS["char-bag"]
    size_first = SearchSpace(
        (Decision("representation_size", (512,)), Decision("representation", ("word-hash",)))
    )
    assert render.layout(scene(task, size_first, 1))[0][1] == "?\n512 size"
    assert render.layout(scene(make_task("wine"), size_first, 1))[0][1] == "?\n512 size"


def scene(task, space: SearchSpace, decided: int) -> render.Scene:
    """The picture's scene after the first `decided` decisions of `space` (each has one option)."""
    return render.scene_of(task, space, [0] * decided)


def _no_call(task, size):
    raise AssertionError("drawing a child computes no features")


def test_render_modes_are_checked_by_name() -> None:
    with pytest.raises(ValueError, match=r"render_mode='text'; accepted: None, \['ansi', "):
        MNMSEnv(task="wine", space=SMALL, store=None, render_mode="text")
    with pytest.raises(ValueError, match="the batched vector env renders nothing"):
        gym.make_vec(
            "mnms_env:MNMS-v2",
            num_envs=2,
            vectorization_mode="vector_entry_point",
            task="wine",
            store=None,
            render_mode="ansi",
        )
    env = make()
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="without a render mode"):
        assert env.render() is None


# --------------------------------------------------------------------------------------------
# 3. SB3's helpers by env id


ENV_KWARGS = {"tasks": ["wine", "digits"], "space": SMALL, "store": None}


def test_sb3_make_vec_env_by_id_learns_and_renders() -> None:
    venv = make_vec_env("MNMS-v2", n_envs=2, env_kwargs=ENV_KWARGS | {"invalid_action": "wrap"})
    assert isinstance(venv, DummyVecEnv)
    assert venv.get_attr("render_mode") == ["rgb_array"] * 2  # make_vec_env's default
    model = PPO("MultiInputPolicy", venv, n_steps=len(SMALL), batch_size=10, seed=0)
    model.learn(total_timesteps=2 * len(SMALL))
    assert [0 < episode["r"] <= 1 for episode in model.ep_info_buffer] == [True, True]
    assert all(frame.shape == (450, 800, 3) for frame in venv.get_images())


def test_sb3_subproc_vec_env_with_its_default_start_method_learns() -> None:
    venv = make_vec_env(
        "mnms_env:MNMS-v2", n_envs=2, env_kwargs=ENV_KWARGS, vec_env_cls=SubprocVecEnv
    )
    model = MaskablePPO("MultiInputPolicy", venv, n_steps=len(SMALL), batch_size=10, seed=0)
    model.learn(total_timesteps=2 * len(SMALL))
    venv.close()
    assert [0 < episode["r"] <= 1 for episode in model.ep_info_buffer] == [True, True]


def test_maskable_ppo_learns_through_sb3_vec_env_over_a_spawned_async_vector_env(tmp_path) -> None:
    """`SB3VecEnv` reaches sub-envs in worker processes (their `action_masks`) through
    Gymnasium's `call`."""
    venv = gym.make_vec(
        "mnms_env:MNMS-v2",
        num_envs=2,
        vectorization_mode="async",
        vector_kwargs={"context": "spawn"},
        **ENV_KWARGS | {"store": str(tmp_path / "r.sqlite")},
    )
    env = SB3VecEnv(venv)
    assert env.get_attr("render_mode") == [None, None]
    env.set_attr("invalid_action", "wrap", indices=[1])
    assert env.get_attr("invalid_action") == ["raise", "wrap"]
    with pytest.raises(ValueError, match="runs a method in every sub-env"):
        env.env_method("action_masks", indices=[0])
    model = MaskablePPO("MultiInputPolicy", env, n_steps=len(SMALL), batch_size=10, seed=0)
    model.learn(total_timesteps=2 * len(SMALL))
    env.close()
    rows = ResultStore(tmp_path / "r.sqlite").rows()
    assert rows and all(0 < row["val_accuracy"] <= 1 for row in rows)


# --------------------------------------------------------------------------------------------
# 4. The batched evaluator's worker processes

WORKERS_SCENARIO = """
import pickle
from mnms_env import ChildConfig, ChildRequest
from mnms_env.batched import batch_group

configs = [
    ChildConfig("raw", 0, depth, 32, "tanh", 0.0, optimizer, 0.01, 64, 1e-4)
    for depth, optimizer in [(1, "sgd"), (2, "adam"), (0, "rmsprop")]
]
requests = [
    ChildRequest.for_task(task, config, seed=seed, budget=2)
    for seed, task in enumerate(["digits", "wine"])
    for config in configs
]
here = BatchedEvaluator(device="cpu").evaluate(requests)
evaluator = BatchedEvaluator(device="cpu", workers=2)
answered = dict(evaluator.stream(requests))
copy = pickle.loads(pickle.dumps(evaluator))  # the workers stay with the original
again = copy.evaluate(requests[:2])
evaluator.close()
copy.close()
assert sorted(answered) == list(range(len(requests)))
pairs = list(zip(here, [answered[i] for i in range(len(requests))])) + list(zip(here, again))
for a, b in pairs:
    assert (a.val_accuracy, a.test_accuracy, a.best_epoch) == (
        b.val_accuracy, b.test_accuracy, b.best_epoch
    ), (a, b)
print("children", len(answered), "groups", len({batch_group(r) for r in requests}))
"""


def test_batched_workers_train_as_this_process_does() -> None:
    """Six children in four stacked groups (two of them mixing optimizers), trained by two
    spawned workers (one intra-op thread each) after the parent has used torch on two threads:
    every child's result equals the in-process one, and a pickled copy of the evaluator starts
    workers of its own."""
    assert run_scenario(WORKERS_SCENARIO) == "children 6 groups 4"


IDLE_WORKER_KILLED_SCENARIO = """
import os, signal, time
from mnms_env import BatchedEvaluator, ChildConfig, ChildRequest

requests = [
    ChildRequest.for_task("wine", ChildConfig("raw", 0, width=8), seed=s) for s in range(2)
]
evaluator = BatchedEvaluator(device="cpu", workers=1)
first = [r.val_accuracy for r in evaluator.evaluate(requests)]
for pid in list(evaluator._pool._processes):  # as the OOM killer would, between two calls
    os.kill(pid, signal.SIGKILL)
time.sleep(1)
assert [r.val_accuracy for r in evaluator.evaluate(requests)] == first
evaluator.close()
print("recovered")
"""


def test_a_worker_killed_between_calls_is_replaced() -> None:
    """The pool broke for good: every later call raised BrokenProcessPool."""
    assert run_scenario(IDLE_WORKER_KILLED_SCENARIO) == "recovered"


INTERRUPTED_THEN_CLOSED_SCENARIO = """
import os, signal, threading
from mnms_env import BatchedEvaluator, ChildConfig, ChildRequest

# Ctrl-C raises KeyboardInterrupt, also where the suite runs as a shell's background job (which
# starts with SIGINT ignored: the child then trained on and the scenario hung)
signal.signal(signal.SIGINT, signal.default_int_handler)

config = ChildConfig("raw", 0, hidden_layers=2, width=64, batch_size=16)
endless = ChildRequest.for_task("digits", config, budget=100_000)  # hours of training
evaluator = BatchedEvaluator(device="cpu", workers=1)
evaluator.evaluate([ChildRequest.for_task("wine", config)])  # the worker is up
threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C, mid-child
try:
    evaluator.evaluate([endless])
except KeyboardInterrupt:
    evaluator.close()
    print("closed")
"""


def test_close_after_an_interrupted_call_does_not_wait_for_its_training() -> None:
    """`close()` (the CLI's `finally`, on Ctrl-C or SIGTERM) joined the workers, which went
    on training the abandoned child to its end."""
    assert run_scenario(INTERRUPTED_THEN_CLOSED_SCENARIO) == "closed"


UNGUARDED_SCRIPT = """
from mnms_env import BatchedEvaluator, ChildConfig, ChildRequest
config = ChildConfig(representation="raw", representation_size=0)
BatchedEvaluator(device="cpu", workers=1).evaluate([ChildRequest.for_task("wine", config)])
"""


def test_workers_of_a_script_that_trains_when_imported_fail_at_once_naming_the_fix(
    tmp_path,
) -> None:
    """Spawned workers import the script that started them; one that trains at import time
    cannot start a worker. The parent must not hang, and its error says what to change."""
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=SCENARIO_SECONDS,
    )
    assert done.returncode != 0
    assert "keep that code under `if __name__ == '__main__':`" in done.stderr, done.stderr[-2000:]
