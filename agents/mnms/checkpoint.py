"""Checkpoints: the agent written to one file plus its history file, and read back onto an env,
as an exact resume or as a new run (a transfer when the env has new tasks). `MNMS.save` and
`MNMS.load` call these.

A checkpoint is a dict of tensors and plain values, so it loads with `weights_only=True`; task
embeddings, baselines, replay and masks are keyed by task name, not by index. Its size does not
grow with the run: the history (every child sampled) is appended to a JSON Lines file beside it
(`history`), so an update writes only its own children there.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from agents.mnms.config import NETWORK_SIZES, MNMSConfig
from agents.mnms.history import (
    HistoryMark,
    append_records,
    history_path,
    read_records,
    write_records,
)
from agents.mnms.records import ChildRecord
from mnms_env import make_task
from mnms_env.tasks import nearest_task

if TYPE_CHECKING:
    from agents.mnms.agent import MNMS

CHECKPOINT_FORMAT = 2
HISTORY_INSIDE = 1
"""The format before the history file: the whole history inside the checkpoint (still read)."""
NewTaskInit = Literal["random", "mean", "similar", "descriptor"]
NEW_TASK_INITS: tuple[NewTaskInit, ...] = ("random", "mean", "similar", "descriptor")
"""Where a task new to a checkpoint starts: a random embedding (the paper), the mean of the
checkpoint's task embeddings, the mean of those of its tasks that allow exactly the new task's
options (`"similar"`: the same masks, so the same modality and, on tables, the same coverage),
or the embedding of the one of those whose descriptor (`TaskCard.descriptor`: classes, training
size, input length, majority share) is nearest (`"descriptor"`); both are zero-shot and cost no
training. With no task of the same masks, the mean of all; `"descriptor"` with no descriptors to
compare falls back to `"similar"`, with a warning. (Under `MNMSAskTell`, where every option is
valid for every task, `"similar"` is the mean.)"""
LIKE_MASKS: tuple[NewTaskInit, ...] = ("similar", "descriptor")
"""The starts that compare the new task's masks with the checkpoint's tasks'."""


@dataclass(frozen=True)
class SavedCheckpoint:
    """A checkpoint file as an agent wrote it or resumed from it, and the part of its history
    file it vouches for: the agent's next save to that file appends to the history there instead
    of rewriting it."""

    identity: tuple[int, ...]
    """The checkpoint file's device, inode, size and modification time: if another writer has
    replaced the file since, they differ, and the history is written anew."""
    history_file: Path
    history: HistoryMark

    @classmethod
    def of(cls, path: Path, history_file: Path, history: HistoryMark) -> SavedCheckpoint:
        return cls(_identity(path), history_file.resolve(), history)

    def appends_to(self, path: Path, records: int) -> bool:
        """Whether a save of an agent with `records` history records to `path` may append: the
        file there is still this one, its history file is the one vouched for and holds at least
        what the checkpoint vouches for (cutting back a shorter one would pad it with zeros),
        and the agent's history has not shrunk."""
        history_file = history_path(path)
        return (
            _identity(path) == self.identity
            and history_file.resolve() == self.history_file
            and history_file.exists()
            and history_file.stat().st_size >= self.history.size
            and self.history.records <= records
        )


def checkpoint_state(agent: MNMS) -> dict[str, Any]:
    """Everything of `agent` a checkpoint holds but the history: its size does not grow with
    the run (the replay bank is bounded by `replay_capacity`)."""
    weights = agent.policy.state_dict()
    table = weights.pop("task_embedding.weight")
    return {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(agent.config),
        "seed": agent.seed,
        "sizes": list(agent.sizes),
        "num_actions": agent.num_actions,
        "options": agent.options,
        "task_names": list(agent.task_names),
        "controller": weights,
        "task_embeddings": {name: table[i].clone() for i, name in enumerate(agent.task_names)},
        "trained_tasks": None if agent.trained_tasks is None else list(agent.trained_tasks),
        "optimizer": agent.optimizer.state_dict(),
        "baselines": dict(agent.baselines),
        "replay": agent.replay.state_dict(),
        "task_masks": {k: torch.as_tensor(v) for k, v in agent.task_masks.items()},
        "task_descriptors": {k: torch.as_tensor(v) for k, v in agent.task_descriptors.items()},
        "torch_rng": agent.generator.get_state(),
        "numpy_rng": agent.rng.bit_generator.state,
        "num_children": agent.num_children,
        "num_updates": agent.num_updates,
    }


def option_texts(decisions: Iterable[tuple[str, Iterable[Any]]]) -> list[list[Any]]:
    """`[name, [option as text, ...]]` of each `(name, options)` decision: what a checkpoint
    keeps of its space, since equal option counts can mean other options."""
    return [[name, [_option_text(option) for option in options]] for name, options in decisions]


def _option_text(option: Any) -> str:
    """`repr(option)` (what checkpoints have always kept), without an object's memory address
    (a function's repr holds one): the same in every process."""
    text = repr(option)
    return text if isinstance(option, str) else re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def first_changed(saved: list[list[Any]], now: list[list[Any]]) -> tuple[list[Any], list[Any]]:
    """The first `[name, options]` of `saved` (`option_texts`) that differs from `now`'s, with
    `now`'s: what a refusal to load names."""
    return next((old, new) for old, new in zip(saved, now, strict=True) if old != new)


def restored_config(state: dict[str, Any], overrides: Mapping[str, Any] | None) -> MNMSConfig:
    """The checkpoint's `MNMSConfig` with `overrides` replacing fields of it; the fields that
    shape the controller's weights (`NETWORK_SIZES`) must stay."""
    config = MNMSConfig(**state["config"])
    if overrides is None:
        return config
    if not isinstance(overrides, Mapping):
        raise TypeError(
            f"overrides maps MNMSConfig fields to values, got {type(overrides).__name__} "
            f"{overrides!r}"
        )
    accepted = [f.name for f in fields(MNMSConfig)]
    unknown = [name for name in overrides if name not in accepted]
    if unknown:
        raise ValueError(f"overrides: unknown MNMSConfig fields {unknown}; accepted: {accepted}")
    resized = [n for n in NETWORK_SIZES if n in overrides and overrides[n] != getattr(config, n)]
    if resized:
        raise ValueError(
            "MNMSConfig "
            + ", ".join(f"{n}={overrides[n]!r}" for n in resized)
            + " would resize the checkpoint's network, which has "
            + ", ".join(f"{n}={getattr(config, n)}" for n in resized)
            + ": keep its sizes"
        )
    return replace(config, **overrides)


def write_checkpoint(agent: MNMS, path: str | Path, *, extra: dict[str, Any] | None = None) -> None:
    """Write `agent`'s state to `path` and its history to the history file beside it. `extra`
    (tensors and plain values) is kept under the key `"extra"`, for what a caller holds beside
    the agent (`MNMSAskTell`: its outstanding asks); `MNMS.load` ignores it.

    The history file gets only the records it lacks when `path` is the checkpoint the agent
    last wrote or resumed from (else it is written whole), and is on disk before the checkpoint
    is replaced, through a `.partial` file renamed into place: a crash never leaves half a
    checkpoint, nor one whose history is missing.
    """
    path = Path(path)
    if path.is_dir():  # refused before the history file and the .partial are written beside it
        raise IsADirectoryError(f"{path} is a directory; a checkpoint is a file: say {path}.pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    history_file, saved = history_path(path), agent.last_checkpoint
    if saved is not None and saved.appends_to(path, len(agent.history)):
        mark = append_records(history_file, saved.history, agent.history[saved.history.records :])
    else:
        mark = write_records(history_file, agent.history)
    state = {
        **checkpoint_state(agent),
        "history_file": history_file.name,
        "history_mark": asdict(mark),
        **({} if extra is None else {"extra": extra}),
    }
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    agent.last_checkpoint = SavedCheckpoint.of(path, history_file, mark)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at `path` (its history, from the file beside it: `read_history`); a file
    that is not an MNMS checkpoint of a format this version reads is refused."""
    try:
        state = torch.load(path, weights_only=True)
    except IsADirectoryError:
        raise ValueError(
            f"{path} is a folder; a checkpoint is a file (a run's: {Path(path) / 'checkpoint.pt'})"
        ) from None
    except Exception as err:  # torch raises many kinds for a file that is not a checkpoint
        text = _unpickling_cause(str(err)) if isinstance(err, pickle.UnpicklingError) else str(err)
        why = next(iter(text.splitlines()), "")
        raise ValueError(
            f"{path}: not an MNMS checkpoint ({type(err).__name__}{': ' + why if why else ''})"
        ) from err
    found = state.get("format") if isinstance(state, dict) else type(state).__name__
    if found not in (HISTORY_INSIDE, CHECKPOINT_FORMAT):
        raise ValueError(
            f"{path}: checkpoint format {found!r}, this version reads {HISTORY_INSIDE} and "
            f"{CHECKPOINT_FORMAT}"
        )
    return state


def _unpickling_cause(text: str) -> str:
    """The cause in torch's weights-only unpickling error, without its advice to load with
    `weights_only=False` (which an MNMS checkpoint never needs)."""
    _, _, cause = text.partition("WeightsUnpickler error:")
    return " ".join(cause.split("Check the documentation")[0].split(" Please use")[0].split())


def read_history(path: str | Path) -> list[ChildRecord]:
    """Every child the run checkpointed at `path` sampled, in order (what `MNMS.load` resumes
    with as `agent.history`)."""
    return _history(read_checkpoint(path), Path(path))


def _history(state: dict[str, Any], path: Path) -> list[ChildRecord]:
    """The history of checkpoint `state` read from `path`: from its history file, or from
    inside a checkpoint of the format before it."""
    if state["format"] == HISTORY_INSIDE:
        return [ChildRecord.from_dict(_with_fingerprint(r)) for r in state["history"]]
    return read_records(_history_file(state, path), HistoryMark(**state["history_mark"]))


def _history_file(state: dict[str, Any], path: Path) -> Path:
    """The history file of checkpoint `state`, found beside the checkpoint file `path`."""
    return path.with_name(state["history_file"])


def restore_policy(
    agent: MNMS,
    state: dict[str, Any],
    path: str | Path,
    *,
    new_task_init: NewTaskInit,
    freeze: bool,
    resume: bool,
    new_masks: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Load the checkpoint's network into `agent.policy` and choose which of its weights train.

    Each task the checkpoint knows keeps its embedding; a new task's starts as `new_task_init`
    says (`"similar"` compares `new_masks`, each new task's masks, with the checkpoint's).
    `freeze=True` trains only the new tasks' embeddings; an exact resume keeps the checkpoint's
    choice; otherwise every weight trains.
    """
    if (list(agent.sizes), agent.num_actions) != (state["sizes"], state["num_actions"]):
        raise ValueError(
            f"{path} was trained on a space with option counts {state['sizes']} "
            f"(actions {state['num_actions']}); this env has {list(agent.sizes)} "
            f"(actions {agent.num_actions})"
        )
    saved = state.get("options")  # absent from checkpoints written before they were kept
    if saved is not None and agent.options is not None and saved != agent.options:
        (name, was), now = first_changed(saved, agent.options)
        raise ValueError(
            f"{path} was trained on a space whose decision {name!r} has options {was}; this "
            f"env's {now[0]!r} has {now[1]}: each action would mean another option"
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
    starts = _new_task_starts(agent, state, new, new_task_init, new_masks)
    for i, name in enumerate(agent.task_names):
        table[i] = known[name] if name in known else starts[name]
    weights["task_embedding.weight"] = table
    agent.policy.load_state_dict(weights)
    if freeze:
        agent.trained_tasks = tuple(new)
    elif resume and state["trained_tasks"] is not None:
        agent.trained_tasks = tuple(state["trained_tasks"])


def _new_task_starts(
    agent: MNMS,
    state: dict[str, Any],
    new: list[str],
    how: NewTaskInit,
    masks: Mapping[str, np.ndarray] | None,
) -> dict[str, torch.Tensor]:
    """The starting embedding of each new task, as `NEW_TASK_INITS` describes `how`."""
    if how == "random":
        return {name: _new_task_embedding(name, agent.seed, agent.config) for name in new}
    known = state["task_embeddings"]
    everyone = torch.stack(list(known.values())).mean(dim=0)
    if how == "mean":
        return dict.fromkeys(new, everyone)
    if masks is None:
        raise ValueError(f"new_task_init={how!r} needs the new tasks' masks (new_masks)")
    starts = {}
    for name in new:
        alike = [
            source
            for source, seen in state["task_masks"].items()
            if source in known and np.array_equal(seen.numpy(), masks[name])
        ]
        if not alike:
            warnings.warn(
                f"new task {name!r}: no task of the checkpoint allows its options; it starts at "
                "the mean of all their embeddings",
                stacklevel=4,
            )
            starts[name] = everyone
            continue
        if how == "descriptor":
            alike = _nearest(name, alike, state, agent.task_descriptors.get(name))
        starts[name] = torch.stack([known[source] for source in alike]).mean(dim=0)
    return starts


def _nearest(
    name: str, candidates: list[str], state: dict[str, Any], descriptor: np.ndarray | None
) -> list[str]:
    """The one of `candidates` with a saved descriptor whose descriptor is nearest to
    `descriptor` (`nearest_task`); all of them, with a warning, when there is nothing to
    compare."""
    saved = state.get("task_descriptors", {})  # absent from checkpoints written before them
    described = [source for source in candidates if source in saved]
    if descriptor is None or not described:
        lacking = "its env tells" if descriptor is None else "the checkpoint holds"
        warnings.warn(
            f"new task {name!r}: {lacking} no descriptor to compare; it starts at the mean "
            "embedding of the tasks with its options (new_task_init='similar')",
            stacklevel=5,
        )
        return candidates
    return [nearest_task(descriptor, {source: saved[source].numpy() for source in described})]


def restore_state(
    agent: MNMS, state: dict[str, Any], path: str | Path, *, resume: bool, keep_rng: bool
) -> None:
    """Restore the rest of the agent from the checkpoint, for the tasks of `agent`'s env only.

    Always: baselines, replayed children, last-seen masks and descriptors of those tasks (the
    env's descriptors win), and with `keep_rng` the sampling RNG. On an exact resume also the
    optimizer (at `agent.config`'s learning rate), the counters and the history (read from the
    history file, which the agent's next save to `path` appends to); otherwise these start
    anew, and the history file is not read.
    """
    agent.optimizer = agent._make_optimizer()
    agent.baselines = {k: v for k, v in state["baselines"].items() if k in agent.task_names}
    agent.replay.load_state_dict(state["replay"], keep=lambda t: t in agent.task_names)
    agent.task_masks = {
        k: v.numpy() for k, v in state["task_masks"].items() if k in agent.task_names
    }
    saved = state.get("task_descriptors", {})  # kept where this env cannot tell them
    agent.task_descriptors = {
        **{k: v.numpy() for k, v in saved.items() if k in agent.task_names},
        **agent.task_descriptors,
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
        path = Path(path)
        agent.history = _history(state, path)
        if state["format"] == CHECKPOINT_FORMAT:  # a checkpoint of the format before is rewritten
            mark = HistoryMark(**state["history_mark"])
            agent.last_checkpoint = SavedCheckpoint.of(path, _history_file(state, path), mark)


def _with_fingerprint(record: dict[str, Any]) -> dict[str, Any]:
    """A history record as written, its child given the task's data fingerprint if it lacks
    one (checkpoints written before requests carried it): the data a resume trains on now."""
    child = record["child"]
    if child is None or "fingerprint" in child:
        return record
    return {**record, "child": {**child, "fingerprint": make_task(child["task"]).fingerprint}}


def _identity(path: Path) -> tuple[int, ...]:
    """What tells one file at `path` from another written there later (empty if there is none)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return ()
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _new_task_embedding(name: str, seed: int, config: MNMSConfig) -> torch.Tensor:
    """A random embedding for a task new to a checkpoint, from a stream of its own (seed and
    task name). Not row i of a fresh `Controller`: with the pre-training's seed that row is
    exactly source task i's initial embedding, which would start the new task in its mode."""
    entropy = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0]
    generator = torch.Generator().manual_seed(int(entropy))
    return torch.randn(config.task_embedding, generator=generator) * config.task_init_std
