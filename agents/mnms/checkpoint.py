"""Checkpoints: the whole agent written to one file, and read back onto an env, as an exact resume
or as a new run (a transfer when the env has new tasks). `MNMS.save` and `MNMS.load` call these.

A checkpoint is a dict of tensors and plain values, so it loads with `weights_only=True`; task
embeddings, baselines, replay and masks are keyed by task name, not by index.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from agents.mnms.config import MNMSConfig
from agents.mnms.records import ChildRecord
from mnms_env import make_task

if TYPE_CHECKING:
    from agents.mnms.agent import MNMS

CHECKPOINT_FORMAT = 1
NEW_TASK_INITS = ("random", "mean")


def write_checkpoint(agent: MNMS, path: str | Path) -> None:
    """Write `agent`'s whole state to `path` through a `.partial` file renamed into place, so a
    crash never leaves half a file."""
    weights = agent.policy.state_dict()
    table = weights.pop("task_embedding.weight")
    state = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(agent.config),
        "seed": agent.seed,
        "sizes": list(agent.sizes),
        "num_actions": agent.num_actions,
        "task_names": list(agent.task_names),
        "controller": weights,
        "task_embeddings": {name: table[i].clone() for i, name in enumerate(agent.task_names)},
        "trained_tasks": None if agent.trained_tasks is None else list(agent.trained_tasks),
        "optimizer": agent.optimizer.state_dict(),
        "baselines": dict(agent.baselines),
        "replay": agent.replay.state_dict(),
        "task_masks": {k: torch.as_tensor(v) for k, v in agent.task_masks.items()},
        "torch_rng": agent.generator.get_state(),
        "numpy_rng": agent.rng.bit_generator.state,
        "num_children": agent.num_children,
        "num_updates": agent.num_updates,
        "history": [r.to_dict() for r in agent.history],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at `path`; a file that is not an MNMS checkpoint of this format is refused."""
    try:
        state = torch.load(path, weights_only=True)
    except Exception as err:  # torch raises many kinds for a file that is not a checkpoint
        raise ValueError(f"{path}: not an MNMS checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{path}: checkpoint format {found!r}, this version reads {CHECKPOINT_FORMAT}"
        )
    return state


def restore_policy(
    agent: MNMS,
    state: dict[str, Any],
    path: str | Path,
    *,
    new_task_init: str,
    freeze: bool,
    resume: bool,
) -> None:
    """Load the checkpoint's network into `agent.policy` and choose which of its weights train.

    Each task the checkpoint knows keeps its embedding; a new task's starts as `new_task_init`
    says. `freeze=True` trains only the new tasks' embeddings; an exact resume keeps the
    checkpoint's choice; otherwise every weight trains.
    """
    if (list(agent.sizes), agent.num_actions) != (state["sizes"], state["num_actions"]):
        raise ValueError(
            f"{path} was trained on a space with option counts {state['sizes']} "
            f"(actions {state['num_actions']}); this env has {list(agent.sizes)} "
            f"(actions {agent.num_actions})"
        )
    known = state["task_embeddings"]
    new = [name for name in agent.task_names if name not in known]
    if freeze and not new:
        raise ValueError(
            "freeze=True trains only the embeddings of tasks new to the checkpoint, and "
            f"every task of this env is known: {list(agent.task_names)}"
        )
    weights = dict(state["controller"])
    table = agent.policy.task_embedding.weight.detach().clone()
    if new_task_init == "mean":
        mean = torch.stack(list(known.values())).mean(dim=0)
    for i, name in enumerate(agent.task_names):
        if name in known:
            table[i] = known[name]
        elif new_task_init == "mean":
            table[i] = mean
        else:
            table[i] = _new_task_embedding(name, agent.seed, agent.config)
    weights["task_embedding.weight"] = table
    agent.policy.load_state_dict(weights)
    if freeze:
        agent.trained_tasks = tuple(new)
    elif resume and state["trained_tasks"] is not None:
        agent.trained_tasks = tuple(state["trained_tasks"])


def restore_state(agent: MNMS, state: dict[str, Any], *, resume: bool, keep_rng: bool) -> None:
    """Restore the rest of the agent from the checkpoint, for the tasks of `agent`'s env only.

    Always: baselines, replayed children and last-seen masks of those tasks, and with
    `keep_rng` the sampling RNG. On an exact resume also the optimizer (at `agent.config`'s
    learning rate), the counters and the history; otherwise these start anew.
    """
    agent.optimizer = agent._make_optimizer()
    agent.baselines = {k: v for k, v in state["baselines"].items() if k in agent.task_names}
    agent.replay.load_state_dict(state["replay"], keep=lambda t: t in agent.task_names)
    agent.task_masks = {
        k: v.numpy() for k, v in state["task_masks"].items() if k in agent.task_names
    }
    if keep_rng:
        agent.generator.set_state(state["torch_rng"])
        agent.rng.bit_generator.state = state["numpy_rng"]
    if resume:
        agent.optimizer.load_state_dict(state["optimizer"])
        for group in agent.optimizer.param_groups:  # an override of the rate wins
            group["lr"] = agent.config.learning_rate
        agent.num_children = state["num_children"]
        agent.num_updates = state["num_updates"]
        agent.history = [ChildRecord.from_dict(_with_fingerprint(r)) for r in state["history"]]


def _with_fingerprint(record: dict[str, Any]) -> dict[str, Any]:
    """A history record as written, its child given the task's data fingerprint if it lacks
    one (checkpoints written before requests carried it): the data a resume trains on now."""
    child = record["child"]
    if child is None or "fingerprint" in child:
        return record
    return {**record, "child": {**child, "fingerprint": make_task(child["task"]).fingerprint}}


def _new_task_embedding(name: str, seed: int, config: MNMSConfig) -> torch.Tensor:
    """A random embedding for a task new to a checkpoint, from a stream of its own (seed and
    task name). Not row i of a fresh `Controller`: with the pre-training's seed that row is
    exactly source task i's initial embedding, which would start the new task in its mode."""
    entropy = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0]
    generator = torch.Generator().manual_seed(int(entropy))
    return torch.randn(config.task_embedding, generator=generator) * config.task_init_std
