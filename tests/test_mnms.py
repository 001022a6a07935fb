"""The MNMS controller: its math, masking, learning, task conditioning, transfer and resume.

Every test searches the small `SMALL_SPACE` (162 text children) scored by `OptimumEvaluator`, whose
per-task optimum is known, so "the controller learned" is asserted, not assumed.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from tabular_evaluator import SMALL_SPACE, OptimumEvaluator

import mnms_env  # noqa: F401  (registers the envs)
from agents.mnms import (
    CHECKPOINT_FORMAT,
    MNMS,
    MNMSConfig,
    masked_logits,
    normalised_advantages,
    read_history,
    updated_baselines,
)
from agents.mnms.checkpoint import read_checkpoint
from mnms_env import Decision, ResultStore, SearchSpace, make_task

TESTS = Path(__file__).resolve().parent
BEST = 0.9  # OptimumEvaluator's score of a task's optimum

# Optima that differ in every decision: a task-blind controller cannot find both greedily.
DISTINCT = {
    "langid-es": {
        "representation": "char-hash",
        "representation_size": 16384,
        "hidden_layers": 2,
        "width": 16,
        "learning_rate": 1e-2,
    },
    "langid-de": {
        "representation": "embedding-bag",
        "representation_size": 1024,
        "hidden_layers": 1,
        "width": 128,
        "learning_rate": 1e-3,
    },
}
# Related optima: langid-fr's recombines choices of the other two (char-hash as langid-es, width
# 64 as langid-de), and all three share the remaining decisions. (No optimum has width 128: every
# child without hidden layers has that width, which would make them a trap two decisions away.)
SHARED = {"representation_size": 4096, "hidden_layers": 1, "learning_rate": 1e-2}
RELATED = {
    "langid-es": {"representation": "char-hash", "width": 16, **SHARED},
    "langid-de": {"representation": "embedding-bag", "width": 64, **SHARED},
    "langid-fr": {"representation": "char-hash", "width": 64, **SHARED},
}


def make_env(tasks: list[str], optima: dict[str, dict[str, Any]], **kwargs: Any) -> gym.Env:
    evaluator = OptimumEvaluator(optima, **kwargs.pop("evaluator_kwargs", {}))
    store = kwargs.pop("store", None)
    return gym.make(
        "MNMS-v2", tasks=tasks, space=SMALL_SPACE, evaluator=evaluator, store=store, **kwargs
    )


def greedy_config(agent: MNMS, task: str) -> dict[str, Any]:
    decisions = agent.sample_decisions(task, deterministic=True)[0]
    return asdict(SMALL_SPACE.decode(decisions, "text"))


def children_to_optimum(agent: MNMS, task: str) -> int | None:
    """1-based index (over the agent's history) of the first child of `task` at its optimum."""
    for i, record in enumerate(agent.history, start=1):
        if record.task == task and record.reward >= BEST - 1e-9:
            return i
    return None


# ------------------------------------------------------------------------------ the math


def test_advantage_is_normalised_per_task() -> None:
    rewards = torch.tensor([0.9, 0.6, 0.09, 0.06])
    baselines = torch.tensor([0.6, 0.6, 0.06, 0.06])  # two tasks, rewards 10x apart
    advantages = normalised_advantages(rewards, baselines, floor=0.01)
    torch.testing.assert_close(advantages, torch.tensor([0.5, 0.0, 0.5, 0.0]))
    # a baseline near 0 is floored instead of dividing by ~0
    floored = normalised_advantages(torch.tensor([0.02]), torch.tensor([0.0]), floor=0.01)
    torch.testing.assert_close(floored, torch.tensor([2.0]))


def test_baseline_is_a_per_task_moving_average() -> None:
    b = updated_baselines({"a": 0.5}, ["a", "b", "a", "b"], [1.0, 0.2, 1.0, 0.4], decay=0.5)
    assert b["a"] == pytest.approx(0.875)  # 0.5 -> 0.75 -> 0.875
    assert b["b"] == pytest.approx(0.325)  # seeded at the batch mean 0.3 -> 0.25 -> 0.325


def test_masked_options_have_probability_zero() -> None:
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[False, True, True], [True, False, False]])
    probs = torch.softmax(masked_logits(logits, mask), dim=-1)
    assert torch.all(probs[~mask] == 0) and torch.allclose(probs.sum(-1), torch.ones(2))
    entropy = -(probs * torch.log_softmax(masked_logits(logits, mask), dim=-1)).sum(-1)
    assert torch.isfinite(entropy).all() and entropy[1] == 0
    with pytest.raises(ValueError, match="no option valid"):
        masked_logits(logits, torch.tensor([[True, False, False], [False, False, False]]))


def test_a_lower_temperature_samples_the_preferred_options_more_often() -> None:
    env = make_env(["langid-es", "langid-de"], DISTINCT)
    shares = []
    for temperature in (1.0, 0.25):  # the same seed: the same weights, only the softmax differs
        agent = MNMS(env, MNMSConfig(temperature=temperature), seed=0)
        agent.task_masks["langid-es"] = env.unwrapped.masks_of("langid-es")  # as if it sampled
        chosen = agent.sample_decisions("langid-es", 400)
        mode = agent.sample_decisions("langid-es", deterministic=True)[0]
        shares.append(float(np.mean((chosen == mode).all(axis=1))))
    assert shares[1] > 2 * shares[0]
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        MNMSConfig(temperature=0)


def test_controller_samples_only_valid_options() -> None:
    # `raw` is the only representation of the tabular task and is invalid for the text task
    optima = {"langid-es": DISTINCT["langid-es"], "digits": {"hidden_layers": 1}}
    env = make_env(["langid-es", "digits"], optima)
    agent = MNMS(env, seed=0).learn(40)
    tasks = {r.task for r in agent.history}
    assert tasks == {"langid-es", "digits"}
    for record in agent.history:
        representation = record.child.request.config.representation
        assert (representation == "raw") == (record.task == "digits")
    samples = agent.sample_decisions("langid-es", 500)
    assert not np.any(samples[:, 0] == SMALL_SPACE.decisions[0].options.index("raw"))


# ------------------------------------------------------------------------------ learning


def test_finds_each_task_optimum_and_differentiates_tasks() -> None:
    env = make_env(list(DISTINCT), DISTINCT)
    agent = MNMS(env, seed=0).learn(200)
    for task, optimum in DISTINCT.items():
        # (a) found within 200 children of both tasks (uniform sampling needs ~162 per task)
        assert children_to_optimum(agent, task) is not None, task
        # (b) the final greedy child of each task is that task's own optimum
        greedy = greedy_config(agent, task)
        assert {name: greedy[name] for name in optimum} == optimum, task
    assert greedy_config(agent, "langid-es") != greedy_config(agent, "langid-de")


def test_a_task_blind_controller_fails_the_differentiation_check() -> None:
    """The check above has teeth: with the task embedding zeroed and frozen the controller
    cannot tell the tasks apart, so both get the same greedy child."""
    env = make_env(list(DISTINCT), DISTINCT)
    agent = MNMS(env, seed=0)
    agent.policy.task_embedding.weight.data.zero_()
    agent.policy.task_embedding.weight.requires_grad_(False)
    agent.learn(200)
    assert greedy_config(agent, "langid-es") == greedy_config(agent, "langid-de")


@pytest.mark.parametrize(
    ("mode", "replay"), [("sync", True), ("sync", False), ("vector_entry_point", True)]
)
def test_vector_env_learns_through_autoreset(mode: str, replay: bool) -> None:
    envs = gym.make_vec(
        "MNMS-v2",
        num_envs=3,
        vectorization_mode=mode,
        tasks=list(DISTINCT),
        space=SMALL_SPACE,
        evaluator=OptimumEvaluator(DISTINCT),
        store=None,
    )
    agent = MNMS(envs, MNMSConfig(batch_size=6, replay=replay), seed=1).learn(30)
    assert agent.task_names == tuple(DISTINCT)
    assert agent.num_children == len(agent.history) == 30 and agent.num_updates == 5
    for record in agent.history:  # the ignored autoreset actions never enter a child
        config = SMALL_SPACE.decode(record.decisions, "text")
        assert record.child.request.config == config and record.task == record.child.request.task
        optimum = DISTINCT[record.task]
        matched = sum(asdict(config)[k] == v for k, v in optimum.items())
        assert record.reward == pytest.approx(0.3 + 0.6 * matched / len(optimum))


def test_act_drives_an_env_with_explicit_recurrent_state() -> None:
    env = make_env(list(DISTINCT), DISTINCT)
    agent = MNMS(env, seed=0)
    observation, info = env.reset(seed=0, options={"task": "langid-de"})
    state = agent.policy.initial_state(1)
    terminated = False
    while not terminated:
        batch = {key: np.asarray(value)[None] for key, value in observation.items()}
        action, _, state = agent.act(batch, info["action_mask"][None], state, deterministic=True)
        observation, reward, terminated, _, info = env.step(int(action[0]))
    assert state[0].shape == (1, agent.config.hidden_size)
    assert info["child"]["task"] == "langid-de" and 0.3 <= reward <= BEST


def test_rejects_envs_without_the_mnms_contract() -> None:
    with pytest.raises(ValueError, match="MNMS-v2 observation"):
        MNMS(gym.make("MNMS-OneShot-v2", task="langid-es", space=SMALL_SPACE, store=None))
    with pytest.raises(ValueError, match="2 distinct names"):
        MNMS(make_env(list(DISTINCT), DISTINCT), tasks=["only-one"])
    swapped = MNMS(make_env(list(DISTINCT), DISTINCT), tasks=list(DISTINCT)[::-1])
    with pytest.raises(RuntimeError, match="must follow the env's task indices"):
        swapped.learn(4)
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        MNMSConfig(batch_size=0)


# ---------------------------------------------------------------------- save, load, transfer


def test_save_load_resumes_exactly(tmp_path: Path) -> None:
    env = make_env(list(DISTINCT), DISTINCT)
    agent = MNMS(env, MNMSConfig(batch_size=4), seed=2).learn(16)
    agent.save(tmp_path / "agent.pt")
    continued = agent.learn(16).history[16:]
    restored = MNMS.load(tmp_path / "agent.pt", make_env(list(DISTINCT), DISTINCT))
    assert restored.num_children == 16 and len(restored.history) == 16
    assert restored.learn(16).history[16:] == continued


def history_inside(path: Path, old: Path, *, fingerprints: bool = True) -> None:
    """Rewrite the checkpoint at `path` as `old` in format 1, the history inside the checkpoint
    (optionally from before requests carried their task's fingerprint)."""
    state = torch.load(path, weights_only=True)
    history = [r.to_dict() for r in read_history(path)]
    for record in history if not fingerprints else ():
        del record["child"]["fingerprint"]
    del state["history_file"], state["history_mark"]
    torch.save({**state, "format": 1, "history": history}, old)


def test_a_checkpoint_with_the_history_inside_resumes_in_the_new_layout(tmp_path: Path) -> None:
    """Checkpoints of format 1 hold their history (written before requests carried their task's
    fingerprint, they lack it; a resume fills it in from the task's data). They resume exactly,
    and the next save writes the history file."""
    agent = MNMS(make_env(list(DISTINCT), DISTINCT), MNMSConfig(batch_size=4), seed=2).learn(8)
    agent.save(tmp_path / "agent.pt")
    history_inside(tmp_path / "agent.pt", tmp_path / "old.pt", fingerprints=False)
    assert not (tmp_path / "old.pt.history.jsonl").exists()
    restored = MNMS.load(tmp_path / "old.pt", make_env(list(DISTINCT), DISTINCT))
    assert restored.history == agent.history == read_history(tmp_path / "old.pt")
    assert {r.child.request.fingerprint for r in restored.history} == {
        make_task(task).fingerprint for task in {r.task for r in agent.history}
    }
    restored.learn(8, checkpoint=tmp_path / "old.pt")
    assert restored.history == agent.learn(8).history
    assert read_checkpoint(tmp_path / "old.pt")["format"] == CHECKPOINT_FORMAT == 2
    assert read_history(tmp_path / "old.pt") == agent.history
    lines = (tmp_path / "old.pt.history.jsonl").read_text().splitlines()
    assert len(lines) == 16


class Crash(Exception):
    """Stands for the process dying."""


def test_a_crash_between_the_history_append_and_the_checkpoint_replace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history file is appended to, then the checkpoint replaced. A crash between the two
    (or during the append: a torn last line) leaves records the checkpoint does not vouch for:
    they are ignored on reading, cut off by the next save, and the resumed run samples exactly
    the children an uninterrupted one does, each once in the file."""
    path, history = tmp_path / "agent.pt", tmp_path / "agent.pt.history.jsonl"
    config = MNMSConfig(batch_size=4)
    MNMS(make_env(list(DISTINCT), DISTINCT), config, seed=3).learn(8, checkpoint=path)
    written = history.read_bytes()

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", crash)
        with pytest.raises(Crash):
            MNMS.load(path, make_env(list(DISTINCT), DISTINCT)).learn(4, checkpoint=path)
    with open(history, "ab") as file:
        file.write(b'{"update":3,"ta')  # and a later append torn by the crash
    assert history.read_bytes().startswith(written) and history.read_bytes().count(b"\n") == 12

    assert len(read_history(path)) == 8
    resumed = MNMS.load(path, make_env(list(DISTINCT), DISTINCT))
    assert resumed.num_children == len(resumed.history) == 8
    resumed.learn(8, checkpoint=path)
    uninterrupted = MNMS(make_env(list(DISTINCT), DISTINCT), config, seed=3).learn(16)
    assert resumed.history == uninterrupted.history == read_history(path)
    assert len(history.read_text().splitlines()) == 16


def test_a_checkpoint_costs_the_same_however_long_the_run(tmp_path: Path) -> None:
    """Once the replay bank is full, every save writes a checkpoint of the same size and appends
    only its update's children to the history file."""
    path, history = tmp_path / "agent.pt", tmp_path / "agent.pt.history.jsonl"
    sizes, lines = [], []

    def measure(agent: MNMS, stats: Any) -> None:
        sizes.append(path.stat().st_size)
        lines.append(len(history.read_text().splitlines()))

    config = MNMSConfig(batch_size=4, replay_capacity=8)
    env = make_env(list(DISTINCT), DISTINCT)
    MNMS(env, config, seed=1).learn(40, checkpoint=path, callback=measure)
    assert lines == list(range(4, 44, 4))
    assert max(sizes[2:]) - min(sizes[2:]) < 64, sizes  # small ints pickle shorter


def test_the_history_file_belongs_to_its_checkpoint(tmp_path: Path) -> None:
    """A checkpoint whose history file is missing or another's is refused by name on resume (a
    new run does not read it); an agent whose checkpoint another writer replaced writes its
    history whole."""
    path, history = tmp_path / "agent.pt", tmp_path / "agent.pt.history.jsonl"
    env = make_env(list(DISTINCT), DISTINCT)
    first = MNMS(env, MNMSConfig(batch_size=4), seed=1).learn(8, checkpoint=path)
    MNMS(make_env(list(DISTINCT), DISTINCT), MNMSConfig(batch_size=4), seed=2).learn(
        4, checkpoint=path
    )
    first.learn(4, checkpoint=path)  # appending at its mark would keep the other's 4 records
    assert read_history(path) == first.history
    history.write_text(history.read_text().replace('"update":0', '"update":9', 1))
    with pytest.raises(ValueError, match="agent.pt.history.jsonl is not its checkpoint's history"):
        MNMS.load(path, make_env(list(DISTINCT), DISTINCT))
    history.unlink()
    with pytest.raises(ValueError, match="agent.pt.history.jsonl: no such history file; its "):
        read_history(path)
    transferred = MNMS.load(path, make_env(["langid-es"], DISTINCT), new_run=True)
    assert transferred.history == [] and transferred.num_children == 0


def test_transfer_keeps_known_weights_and_adds_new_tasks(tmp_path: Path) -> None:
    source = MNMS(make_env(["langid-es", "langid-de"], RELATED), seed=0).learn(24)
    source.save(tmp_path / "source.pt")
    target_env = make_env(["langid-fr", "langid-es"], RELATED)
    agent = MNMS.load(tmp_path / "source.pt", target_env)
    table = agent.policy.task_embedding.weight
    assert torch.equal(table[1], source.policy.task_embedding.weight[0])  # langid-es kept
    assert not any(torch.equal(table[0], row) for row in source.policy.task_embedding.weight)
    # nor source task 0's initial embedding, which a fresh controller with the source's seed
    # would put in row 0
    fresh = MNMS(make_env(["langid-es", "langid-de"], RELATED), seed=0).policy.task_embedding
    assert not torch.equal(table[0], fresh.weight[0])
    again = MNMS.load(tmp_path / "source.pt", target_env).policy.task_embedding.weight
    assert torch.equal(again[0], table[0])  # the new task's draw is reproducible
    for name, weight in source.policy.state_dict().items():
        if name != "task_embedding.weight":
            assert torch.equal(agent.policy.state_dict()[name], weight), name
    assert agent.num_children == 0 and agent.baselines.keys() == {"langid-es"}
    assert {e.task for e in agent.replay.episodes} == {"langid-es"}

    frozen = MNMS.load(tmp_path / "source.pt", target_env, freeze=True)
    before = {k: v.clone() for k, v in frozen.policy.state_dict().items()}
    frozen.learn(16)
    after = frozen.policy.state_dict()
    for name, weight in before.items():
        if name != "task_embedding.weight":
            assert torch.equal(after[name], weight), name
    assert torch.equal(after["task_embedding.weight"][1], before["task_embedding.weight"][1])
    assert not torch.equal(after["task_embedding.weight"][0], before["task_embedding.weight"][0])

    with pytest.raises(ValueError, match="freeze=True"):
        MNMS.load(
            tmp_path / "source.pt", make_env(["langid-es", "langid-de"], RELATED), freeze=True
        )
    other = gym.make("MNMS-v2", task="langid-es", store=None, evaluator=OptimumEvaluator(RELATED))
    with pytest.raises(ValueError, match="option counts"):
        MNMS.load(tmp_path / "source.pt", other)


def test_a_new_run_from_a_checkpoint_on_its_own_tasks(tmp_path: Path) -> None:
    source = MNMS(make_env(list(DISTINCT), DISTINCT), MNMSConfig(batch_size=4), seed=2).learn(8)
    source.save(tmp_path / "source.pt")
    agent = MNMS.load(
        tmp_path / "source.pt",
        make_env(list(DISTINCT), DISTINCT),
        new_run=True,
        overrides={"batch_size": 2, "replay": False},
    )
    assert agent.num_children == 0 and agent.history == []
    assert (agent.config.batch_size, agent.config.replay) == (2, False)
    for name, weight in source.policy.state_dict().items():
        assert torch.equal(agent.policy.state_dict()[name], weight), name


def test_bad_checkpoints_and_settings_are_named(tmp_path: Path) -> None:
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt: not an MNMS checkpoint"):
        MNMS.load(tmp_path / "bad.pt", make_env(list(DISTINCT), DISTINCT))
    with pytest.raises(ValueError, match="update_epochs must be a whole number, got 1.5"):
        MNMSConfig(update_epochs=1.5)
    with pytest.raises(ValueError, match="learning_rate must be a number, got 'x'"):
        MNMSConfig(learning_rate="x")
    for field, bad in [("entropy_coef", math.nan), ("task_init_std", math.inf)]:
        with pytest.raises(ValueError, match=f"{field} must be a finite number, got {bad!r}"):
            MNMSConfig(**{field: bad})  # they failed in the first update, naming neither
    env = make_env(list(DISTINCT), DISTINCT)
    for seed in (-1, 2**64):  # 2**64 overflowed in torch's generator
        with pytest.raises(ValueError, match=rf"seed must be an int in \[0, 2\*\*64\), got {seed}"):
            MNMS(env, seed=seed)
    assert MNMS(env, seed=2**64 - 1).seed == 2**64 - 1
    assert MNMSConfig(max_grad_norm=math.inf).max_grad_norm == math.inf  # no clipping
    with pytest.raises(TypeError, match=r"config= takes an MNMSConfig, got dict .*\(\*\*config"):
        MNMS(env, config={"batch_size": 4})
    with pytest.raises(ValueError, match="children must be an int >= 0, got True"):
        MNMS(env, seed=0).learn(True)
    assert MNMSConfig(replay=np.True_, batch_size=np.int64(4)) == MNMSConfig(batch_size=4)
    assert MNMS(env, seed=np.int64(3)).seed == 3  # torch's generator took only a Python int
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError, match="folder is a directory; a checkpoint is a file"):
        MNMS(env).save(tmp_path / "folder")
    with pytest.raises(IsADirectoryError, match="folder' is a directory, not a file"):
        MNMS(env).learn(2, checkpoint=tmp_path / "folder")  # before an update's children
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt", "folder"]  # nothing beside


def test_checkpoints_differing_only_in_their_suffix_keep_their_own_histories(
    tmp_path: Path,
) -> None:
    """`mnms.pt` and `mnms.ckpt` shared `mnms.history.jsonl`: saving one lost the other's."""
    env = make_env(list(DISTINCT), DISTINCT)
    first = MNMS(env, MNMSConfig(batch_size=4), seed=1).learn(8, checkpoint=tmp_path / "mnms.pt")
    MNMS.load(tmp_path / "mnms.pt", make_env(["langid-es"], DISTINCT)).learn(
        4, checkpoint=tmp_path / "mnms.ckpt"
    )
    assert read_history(tmp_path / "mnms.pt") == first.history
    assert len(read_history(tmp_path / "mnms.ckpt")) == 4


def test_load_refuses_what_it_would_load_wrongly(tmp_path: Path) -> None:
    path = tmp_path / "a.pt"
    MNMS(make_env(list(DISTINCT), DISTINCT), MNMSConfig(batch_size=4)).learn(4).save(path)
    env = make_env(list(DISTINCT), DISTINCT)
    # the same option counts with other options: every learned preference would move
    widths = SearchSpace(
        tuple(
            Decision(d.name, d.options[::-1]) if d.name == "width" else d
            for d in SMALL_SPACE.decisions
        )
    )
    reordered = gym.make(
        "MNMS-v2",
        tasks=list(DISTINCT),
        space=widths,
        evaluator=OptimumEvaluator(DISTINCT),
        store=None,
    )
    with pytest.raises(ValueError, match=r"decision 'width' has options \['16', '32'"):
        MNMS.load(path, reordered)
    with pytest.raises(ValueError, match="hidden_size=32 would resize the checkpoint's network"):
        MNMS.load(path, env, overrides={"hidden_size": 32})  # failed deep inside torch
    with pytest.raises(ValueError, match=r"unknown MNMSConfig fields \['bogus'\]; accepted: "):
        MNMS.load(path, env, overrides={"bogus": 1})
    with pytest.raises(TypeError, match="overrides maps MNMSConfig fields to values, got list"):
        MNMS.load(path, env, overrides=[("batch_size", 2)])
    with pytest.raises(TypeError, match="a Gymnasium env or vector env .*, got NoneType None"):
        MNMS.load(path, None)
    with pytest.warns(UserWarning, match="are the checkpoint's in another order"):
        swapped = MNMS.load(path, make_env(list(DISTINCT)[::-1], DISTINCT))
    assert swapped.num_children == 0  # a new run, said aloud
    with pytest.raises(ValueError, match="is a folder; a checkpoint is a file"):
        MNMS.load(tmp_path, env)
    (tmp_path / "run.json").write_text("{}")  # torch's advice to drop weights_only is left out
    with pytest.raises(ValueError, match=r"run.json: not an MNMS checkpoint \(Unpickl") as error:
        read_checkpoint(tmp_path / "run.json")
    assert "Unsupported operand" in str(error.value) and "weights_only" not in str(error.value)


def test_an_exact_resume_takes_overrides(tmp_path: Path) -> None:
    MNMS(make_env(list(DISTINCT), DISTINCT), MNMSConfig(batch_size=4)).learn(4).save(
        tmp_path / "a.pt"
    )
    agent = MNMS.load(
        tmp_path / "a.pt", make_env(list(DISTINCT), DISTINCT), overrides={"learning_rate": 0.5}
    )
    assert agent.num_children == 4  # resumed, with the new rate in the optimizer too
    assert [g["lr"] for g in agent.optimizer.param_groups] == [0.5] * len(
        agent.optimizer.param_groups
    )


def test_a_lower_replay_capacity_on_load_keeps_only_the_newest(tmp_path: Path) -> None:
    """The whole saved bank was kept, and the next update replayed children past the new
    capacity."""
    env = make_env(list(DISTINCT), DISTINCT)
    saved = MNMS(env, MNMSConfig(batch_size=4)).learn(16)
    saved.save(tmp_path / "a.pt")
    agent = MNMS.load(tmp_path / "a.pt", env, overrides={"replay_capacity": 5})

    def kept(agent: MNMS) -> list[tuple]:
        return [(e.task, e.actions.tolist(), e.reward) for e in agent.replay.episodes]

    assert len(kept(saved)) == 16 and kept(agent) == kept(saved)[-5:]


def test_a_reward_that_is_not_a_finite_number_is_refused_before_it_is_learned() -> None:
    """A NaN reward made b(t) and every weight NaN, and a later sample failed in torch."""
    agent = MNMS(make_env(list(DISTINCT), DISTINCT), MNMSConfig(batch_size=4)).learn(4)
    task = agent.task_names[0]
    episodes = agent.sample_episodes(task, 2)
    episodes[0].reward = 0.5
    before = dict(agent.baselines)
    with pytest.raises(ValueError, match=f"fresh child 1 of task {task!r} has reward nan"):
        agent.update(episodes)
    assert agent.baselines == before and agent.num_updates == 1


def test_transfer_can_start_new_tasks_at_the_mean_embedding(tmp_path: Path) -> None:
    source = MNMS(make_env(["langid-es", "langid-de"], RELATED), seed=0).learn(8)
    source.save(tmp_path / "source.pt")
    known = source.policy.task_embedding.weight.detach()
    agent = MNMS.load(
        tmp_path / "source.pt", make_env(["langid-fr"], RELATED), new_task_init="mean"
    )
    assert torch.allclose(agent.policy.task_embedding.weight[0], known.mean(dim=0))
    with pytest.raises(
        ValueError, match="accepted: \\['random', 'mean', 'similar', 'descriptor'\\]"
    ):
        MNMS.load(tmp_path / "source.pt", make_env(["langid-fr"], RELATED), new_task_init="zero")


def test_transfer_can_start_a_new_task_where_the_tasks_with_its_options_are(
    tmp_path: Path,
) -> None:
    """`similar`: a text task starts at the text sources' mean embedding, a tabular one at the
    tabular sources' (their masks differ: text featurizers against `raw`)."""
    optima = {"langid-es": RELATED["langid-es"], "langid-de": RELATED["langid-de"]}
    optima |= {"digits": {"hidden_layers": 1}, "langid-fr": {}, "wine": {}}
    sources = ["langid-es", "langid-de", "digits"]
    source = MNMS(make_env(sources, optima), MNMSConfig(batch_size=3), seed=0).learn(12)
    assert set(source.task_masks) == set(sources)
    source.save(tmp_path / "source.pt")
    known = dict(zip(sources, source.policy.task_embedding.weight.detach(), strict=True))
    env = make_env(["langid-fr", "wine"], optima)
    agent = MNMS.load(tmp_path / "source.pt", env, new_task_init="similar")
    fr, wine = agent.policy.task_embedding.weight.detach()
    assert torch.allclose(fr, (known["langid-es"] + known["langid-de"]) / 2)
    assert torch.allclose(wine, known["digits"])
    text_only = MNMS(make_env(["langid-es"], optima), MNMSConfig(batch_size=2), seed=0).learn(2)
    text_only.save(tmp_path / "text.pt")
    with pytest.warns(UserWarning, match="new task 'wine': no task of the checkpoint allows"):
        MNMS.load(tmp_path / "text.pt", make_env(["wine"], optima), new_task_init="similar")


def test_transfer_can_start_a_new_task_at_the_source_task_described_most_like_it(
    tmp_path: Path,
) -> None:
    """`descriptor`: of the sources with its options, the one whose classes, training size,
    input length and label balance are nearest: langid-fr (18,320 single words, 78% one class)
    starts at langid-es (15,080, 73%), word-sentiment-da (2,840, 65%) at word-sentiment-en
    (2,704, 65%). A checkpoint without descriptors falls back to `similar`."""
    optima = {"langid-es": RELATED["langid-es"], "word-sentiment-en": {"hidden_layers": 1}}
    optima |= {"langid-fr": {}, "word-sentiment-da": {}}
    sources = ["langid-es", "word-sentiment-en"]
    source = MNMS(make_env(sources, optima), MNMSConfig(batch_size=2), seed=0).learn(4)
    source.save(tmp_path / "source.pt")
    known = dict(zip(sources, source.policy.task_embedding.weight.detach(), strict=True))
    targets = ["langid-fr", "word-sentiment-da"]
    agent = MNMS.load(tmp_path / "source.pt", make_env(targets, optima), new_task_init="descriptor")
    fr, da = agent.policy.task_embedding.weight.detach()
    assert torch.equal(fr, known["langid-es"]) and torch.equal(da, known["word-sentiment-en"])
    state = torch.load(tmp_path / "source.pt", weights_only=True)
    del state["task_descriptors"]
    torch.save(state, tmp_path / "older.pt")
    with pytest.warns(UserWarning, match="the checkpoint holds no descriptor to compare"):
        agent = MNMS.load(
            tmp_path / "older.pt", make_env(targets, optima), new_task_init="descriptor"
        )
    assert torch.allclose(agent.policy.task_embedding.weight[0], sum(known.values()) / 2)


def test_an_env_that_cannot_describe_its_tasks_keeps_working() -> None:
    """`MNMS` asks a vector env's workers for task cards only when they have `card_of`: a call
    of a missing attribute would end an AsyncVectorEnv's worker."""
    from agents.mnms.ask_tell import _SpaceEnv

    envs = gym.vector.AsyncVectorEnv([lambda: _SpaceEnv({"a": (0, 1), "b": (0, 1, 2)}, ["t"])] * 2)
    try:
        assert MNMS(envs).task_descriptors == {}
        envs.call_async("get_wrapper_attr", "task_names")
        assert envs.call_wait(timeout=60) == (("t",), ("t",))  # the workers are still there
    finally:
        envs.close(terminate=True)
    renamed = MNMS(make_env(["langid-es"], RELATED), tasks=["my-langid"])  # names not the env's
    assert renamed.task_descriptors == {}
    tables = partial(gym.make, "mnms_env:MNMS-v2", tasks=["langid-es", "wine"], backend="table")
    envs = gym.vector.AsyncVectorEnv([tables] * 2)  # asking it of "es" ended a worker
    try:
        with pytest.raises(RuntimeError, match=r"index 1 is 'wi' .*info\['task'\] says 'wine'"):
            MNMS(envs, seed=0, tasks=["es", "wi"], config=MNMSConfig(batch_size=2)).learn(2)
    finally:
        envs.close(terminate=True)


def test_transfer_reaches_a_related_task_sooner(tmp_path: Path) -> None:
    """(c) A controller pre-trained on langid-es and langid-de starts better on langid-fr and
    finds its optimum in fewer children than a fresh controller: the median over eight seeds,
    since a random new embedding can land in a source task's mode and stall there (one of these
    eight does; see the README's transfer results)."""
    MNMS(make_env(["langid-es", "langid-de"], RELATED), seed=0).learn(100).save(tmp_path / "s.pt")
    runs: dict[str, list[MNMS]] = {"transferred": [], "fresh": []}
    for seed in range(8):
        new_env = make_env(["langid-fr"], RELATED)
        runs["transferred"].append(MNMS.load(tmp_path / "s.pt", new_env, seed=seed).learn(80))
        runs["fresh"].append(MNMS(make_env(["langid-fr"], RELATED), seed=seed).learn(80))
    first_batch = {
        k: np.mean([r.reward for a in v for r in a.history[:8]]) for k, v in runs.items()
    }
    found = {k: [children_to_optimum(a, "langid-fr") or 1000 for a in v] for k, v in runs.items()}
    assert first_batch["transferred"] > first_batch["fresh"] + 0.05, first_batch
    assert 1.25 * np.median(found["transferred"]) < np.median(found["fresh"]), found


# ------------------------------------------------------------------------------ resume after a kill

RESUME_SCRIPT = """
import sys
from pathlib import Path
import json
sys.path.insert(0, sys.argv[1])
import gymnasium as gym
import mnms_env
from agents.mnms import MNMS, MNMSConfig
from tabular_evaluator import SMALL_SPACE, OptimumEvaluator
optima, tmp = json.loads(sys.argv[2]), Path(sys.argv[3])
total, hang = int(sys.argv[4]), int(sys.argv[5])
evaluator = OptimumEvaluator(optima, log=tmp / "trained.jsonl", hang_at=hang or None)
env = gym.make("MNMS-v2", tasks=list(optima), space=SMALL_SPACE, evaluator=evaluator,
               store=tmp / "results.sqlite")
checkpoint = tmp / "agent.pt"
if checkpoint.exists():
    agent = MNMS.load(checkpoint, env)
else:
    agent = MNMS(env, MNMSConfig(batch_size=4), seed=3)
agent.learn(total - agent.num_children, checkpoint=checkpoint)
"""


def _run_search(tmp_path: Path, total: int, hang: int) -> subprocess.Popen:
    args = [str(TESTS), json.dumps(DISTINCT), str(tmp_path), str(total), str(hang)]
    return subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, *args])


def test_killed_search_resumes_without_losing_or_retraining(tmp_path: Path) -> None:
    total = 24
    process = _run_search(tmp_path, total, hang=11)  # the 11th trained child blocks
    deadline = time.monotonic() + 120
    while not (tmp_path / "trained.hang").exists():
        assert process.poll() is None, "the search exited before reaching the hang"
        assert time.monotonic() < deadline, "the search never reached the hang"
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    store = ResultStore(tmp_path / "results.sqlite")
    checkpoint = MNMS.load(tmp_path / "agent.pt", make_env(list(DISTINCT), DISTINCT))
    trained_before = len(store)
    # the killed update had trained children that its checkpoint does not know
    known = len({(r.task, r.decisions) for r in checkpoint.history})
    assert trained_before > known
    assert 0 < checkpoint.num_children < total

    assert _run_search(tmp_path, total, hang=0).wait(timeout=120) == 0
    lines = (tmp_path / "trained.jsonl").read_text().splitlines()
    trained = [tuple(sorted(json.loads(line).items())) for line in lines]
    assert len(trained) == len(set(trained)), "a child was trained twice"
    assert len(trained) == len(store) > trained_before
    resumed = MNMS.load(tmp_path / "agent.pt", make_env(list(DISTINCT), DISTINCT))
    assert resumed.num_children == total
    stored = {(r["task"], r["config"], r["seed"], r["budget"]) for r in store.rows()}
    sampled = {
        (r.task, SMALL_SPACE.decode(r.decisions, "text").to_json(), 0, 1) for r in resumed.history
    }
    assert stored == sampled  # every sampled child is stored, nothing else is
    # the children of the killed update were re-sampled and answered by the store
    redone = resumed.history[checkpoint.num_children :]
    assert sum(r.child.cached for r in redone) >= trained_before - known
