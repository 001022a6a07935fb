"""`MNMS`: the agent. It samples children through the Gymnasium API, learns from them (the whole
update on one screen in `update`), and saves and loads itself through `checkpoint`."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch import nn

from agents.mnms.checkpoint import (
    LIKE_MASKS,
    NEW_TASK_INITS,
    NewTaskInit,
    SavedCheckpoint,
    read_checkpoint,
    restore_policy,
    restore_state,
    restored_config,
    write_checkpoint,
)
from agents.mnms.config import MNMSConfig
from agents.mnms.envs import (
    as_vector_env,
    env_descriptors,
    env_masks,
    env_options,
    env_task_names,
    unbatch_info,
)
from agents.mnms.policy import Controller, State, one_thread
from agents.mnms.records import ChildRecord, Episode, UpdateStats
from agents.mnms.replay import ReplayBank
from agents.mnms.rule import normalised_advantages, seeded_baselines, updated_baselines
from mnms_env import Child
from mnms_env.records import is_whole


def _on_one_thread(method: Callable) -> Callable:
    """`method`, run under `one_thread()`."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_thread():
            return method(*args, **kwargs)

    return wrapper


class MNMS:
    """The MNMS agent: a `Controller`, its optimizer, per-task baselines and a replay bank.

    `env` is any Gymnasium env (or `VectorEnv`, then each step advances one child per sub-env)
    with the MNMS-v2 contract: a `Discrete` action, a `Dict` observation with `task`
    (`Discrete`), `step` (`Discrete`) and `decisions` (`MultiDiscrete`, option + 1), the valid
    actions in `info["action_mask"]` (else `action_masks()`), and the reward at the last
    decision. Tasks are named by `tasks`, else the env's `task_names` attribute, else
    `task-<index>`; embeddings, baselines and replay are keyed by these names.

    Children are sampled with a seeded generator and every update resets the env with a seed
    derived from `seed` and the update's index, so a run is repeatable and a resumed run
    re-samples exactly the children it lost (which a results store then answers).
    """

    def __init__(
        self,
        env: gym.Env | VectorEnv,
        config: MNMSConfig | None = None,
        *,
        seed: int = 0,
        tasks: Sequence[str] | None = None,
    ) -> None:
        if not is_whole(seed) or not 0 <= seed < 2**64:  # what torch's generator takes
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        if config is not None and not isinstance(config, MNMSConfig):
            raise TypeError(
                f"config= takes an MNMSConfig, got {type(config).__name__} {config!r}"
                + (": say MNMSConfig(**config)" if isinstance(config, dict) else "")
            )
        self.config = config if config is not None else MNMSConfig()
        self.seed = int(seed)
        self.envs = as_vector_env(env)
        self.task_names, self._named = env_task_names(self.envs, tasks)
        observation = self.envs.single_observation_space
        self.sizes = tuple(int(n) - 1 for n in observation["decisions"].nvec)
        self.num_actions = int(self.envs.single_action_space.n)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.policy = Controller(
                self.sizes, self.num_actions, len(self.task_names), self.config
            )
        self.trained_tasks: tuple[str, ...] | None = None
        """None: every weight trains. A tuple (a `freeze=True` transfer): only these tasks'
        embeddings train; every other weight is frozen."""
        self.optimizer = self._make_optimizer()
        self.generator = torch.Generator().manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)
        self.baselines: dict[str, float] = {}
        self.replay = ReplayBank(self.config.replay_capacity)
        self.task_masks: dict[str, np.ndarray] = {}
        """The masks last seen for each task, `(decisions, num_actions)`: used to sample
        decisions outside the env (`sample_decisions`)."""
        self.options = env_options(self.envs)
        """Each decision's name and options as text (`env_options`; None if the env does not
        tell): a checkpoint keeps them, and refuses an env whose options differ."""
        self.task_descriptors = env_descriptors(self.envs, self.task_names)
        """Each task's `TaskCard.descriptor` where the env tells it: what a later transfer
        compares a new task with (`new_task_init="descriptor"`)."""
        self.history: list[ChildRecord] = []
        self.num_children = 0
        self.num_updates = 0
        self.last_checkpoint: SavedCheckpoint | None = None
        """The checkpoint this agent last wrote or resumed from: a save to it appends only the
        new children to its history file."""

    # ---------------------------------------------------------------------------- learning

    def learn(
        self,
        children: int,
        *,
        checkpoint: str | Path | None = None,
        callback: Callable[[MNMS, UpdateStats], None] | None = None,
    ) -> MNMS:
        """Sample and learn from `children` more children (a vector env may overshoot to finish
        its last round). With `checkpoint`, the whole agent is saved after every update, so a
        killed run resumes with `MNMS.load(checkpoint, env).learn(remaining)`. `callback` is
        called after each update (and checkpoint)."""
        if not is_whole(children) or children < 0:
            raise ValueError(f"children must be an int >= 0, got {children!r}")
        if checkpoint is not None and Path(checkpoint).is_dir():  # before an update's work
            raise IsADirectoryError(f"checkpoint={str(checkpoint)!r} is a directory, not a file")
        children = int(children)
        target = self.num_children + children
        while self.num_children < target:
            episodes = self._collect(min(self.config.batch_size, target - self.num_children))
            stats = self.update(episodes)
            if checkpoint is not None:
                self.save(checkpoint)
            if callback is not None:
                callback(self, stats)
        return self

    @_on_one_thread
    def update(self, fresh: list[Episode]) -> UpdateStats:
        """One update on the fresh children plus replayed ones (MNMS; PPO clipping). `learn`
        calls it on the children of the env; `MNMSAskTell` on children it sampled with
        `sample_episodes` and someone else's objective rewarded (a fresh child sampled before
        an earlier update is off-policy, which the clipped importance ratio corrects)."""
        cfg = self.config
        for i, episode in enumerate(fresh):  # a NaN would enter b(t) and every weight
            if not math.isfinite(episode.reward):
                raise ValueError(
                    f"fresh child {i} of task {episode.task!r} has reward {episode.reward!r}; "
                    "a reward is a finite number (set it on each sampled episode)"
                )
        replayed = self.replay.sample(cfg.replay_batch, self.rng) if cfg.replay else []
        batch = fresh + replayed
        index = {name: i for i, name in enumerate(self.task_names)}
        tasks = torch.tensor([index[e.task] for e in batch])
        actions = torch.as_tensor(np.stack([e.actions for e in batch]))
        masks = torch.as_tensor(np.stack([e.masks for e in batch]))
        behaviour_logp = torch.as_tensor(np.stack([e.logp for e in batch]))  # log mu(a_i)
        rewards = torch.tensor([e.reward for e in batch], dtype=torch.float32)
        # b(t): per-task exponential moving average of rewards; a new task starts at its mean.
        fresh_tasks, fresh_rewards = [e.task for e in fresh], [e.reward for e in fresh]
        known = seeded_baselines(self.baselines, fresh_tasks, fresh_rewards)
        baselines = torch.tensor([known[e.task] for e in batch], dtype=torch.float32)
        # A'(a, t) = (R(a, t) - b(t)) / |b(t)|: the per-task normalised advantage (MNMS).
        advantages = normalised_advantages(rewards, baselines, cfg.baseline_floor)[:, None]
        for _ in range(cfg.update_epochs):
            logp, entropy = self.policy.evaluate(tasks, actions, masks)  # log pi(a_i), H_i
            # Importance ratio pi(a_i) / mu(a_i) per decision: 1 on the first step for a child
            # sampled by this policy (the env's; an ask/tell child asked before an earlier update
            # is off-policy), where the loss below is exactly REINFORCE, -A' * sum_i log pi(a_i).
            ratio = torch.exp(logp - behaviour_logp)
            # PPO's clipped surrogate (Schulman et al., 2017) keeps replayed children's steps
            # trusted: min(r A', clip(r, 1 - eps, 1 + eps) A'), summed over decisions.
            clipped = ratio.clamp(1.0 - cfg.clip_ratio, 1.0 + cfg.clip_ratio)
            surrogate = torch.minimum(ratio * advantages, clipped * advantages)
            policy_loss = -surrogate.sum(dim=1).mean()
            entropy_bonus = entropy.sum(dim=1).mean()  # keeps every decision exploring
            loss = policy_loss - cfg.entropy_coef * entropy_bonus
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
        with torch.no_grad():
            log_ratio = logp - behaviour_logp
            approx_kl = float(((log_ratio.exp() - 1) - log_ratio).mean())
            clip_fraction = float(((ratio - 1).abs() > cfg.clip_ratio).float().mean())
        self.baselines = updated_baselines(known, fresh_tasks, fresh_rewards, cfg.baseline_decay)
        if cfg.replay:
            self.replay.add(fresh)
        records = tuple(
            ChildRecord(self.num_updates, e.task, tuple(e.actions.tolist()), e.reward, e.child)
            for e in fresh
        )
        self.history.extend(records)
        self.num_children += len(fresh)
        self.num_updates += 1
        return UpdateStats(
            update=self.num_updates - 1,
            num_children=self.num_children,
            children=records,
            policy_loss=float(policy_loss.detach()),
            entropy=float(entropy.detach().mean()),
            approx_kl=approx_kl,
            clip_fraction=clip_fraction,
            grad_norm=float(grad_norm),
            replayed=len(replayed),
            baselines=dict(self.baselines),
        )

    # ---------------------------------------------------------------------------- sampling

    @_on_one_thread
    def act(
        self,
        observation: dict[str, np.ndarray],
        action_mask: np.ndarray,
        state: State,
        *,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, State]:
        """Actions for a batch of observations (a vector env's), their log-probabilities, and the
        new recurrent state. Rows whose `step` is 0 start a new child from a zero state."""
        steps = torch.tensor(np.asarray(observation["step"]), dtype=torch.long)
        tasks = torch.tensor(np.asarray(observation["task"]), dtype=torch.long)
        decisions = torch.tensor(np.asarray(observation["decisions"]), dtype=torch.long)
        if bool((steps >= len(self.sizes)).any()):
            raise ValueError(f"observation step {steps.tolist()}: the child is already complete")
        fresh = (steps == 0)[:, None]
        state = (state[0].masked_fill(fresh, 0.0), state[1].masked_fill(fresh, 0.0))
        before = (steps - 1).clamp_min(0)
        previous = decisions.gather(1, before[:, None]).squeeze(1) - 1
        with torch.no_grad():
            tokens = self.policy.tokens(steps, previous.clamp_min(0))
            features, state = self.policy(tokens, tasks, state)
            mask = torch.tensor(np.asarray(action_mask, dtype=bool))
            logp = torch.log_softmax(self.policy.logits(features, steps, mask), dim=-1)
            if deterministic:
                actions = logp.argmax(dim=-1)
            else:
                actions = torch.multinomial(logp.exp(), 1, generator=self.generator).squeeze(1)
        chosen = logp.gather(1, actions[:, None]).squeeze(1)
        return actions.numpy(), chosen.numpy(), state

    def sample_decisions(self, task: str, n: int = 1, *, deterministic: bool = False) -> np.ndarray:
        """`(n, decisions)` option indices sampled from the policy for `task`, outside the env,
        under the masks last seen for that task. `deterministic=True`: the greedy child."""
        return self._sample(task, n, deterministic)[0]

    def sample_episodes(self, task: str, n: int = 1) -> list[Episode]:
        """`n` children sampled as `sample_decisions` does, each with the masks and behaviour
        log-probabilities `update` needs; their reward is NaN until the caller sets it."""
        chosen, logp = self._sample(task, n, deterministic=False)
        masks = self.task_masks[task]
        return [
            Episode(task, a, masks.copy(), p, math.nan) for a, p in zip(chosen, logp, strict=True)
        ]

    def _sample(self, task: str, n: int, deterministic: bool) -> tuple[np.ndarray, np.ndarray]:
        """`(n, decisions)` option indices and their float32 log-probabilities."""
        if task not in self.task_masks:
            raise ValueError(
                f"no masks seen yet for task {task!r}; sample_decisions needs one of "
                f"{sorted(self.task_masks)} (tasks the agent has sampled children for)"
            )
        index = self.task_names.index(task)
        masks = np.broadcast_to(self.task_masks[task], (n, *self.task_masks[task].shape))
        chosen = np.zeros((n, len(self.sizes)), dtype=np.int64)
        logp = np.zeros((n, len(self.sizes)), dtype=np.float32)
        state = self.policy.initial_state(n)
        for step in range(len(self.sizes)):
            observation = {
                "task": np.full(n, index),
                "step": np.full(n, step),
                "decisions": chosen + 1,
            }
            chosen[:, step], logp[:, step], state = self.act(
                observation, masks[:, step], state, deterministic=deterministic
            )
        return chosen, logp

    def _collect(self, n: int) -> list[Episode]:
        """Step the env until at least `n` children finish. Gymnasium's NEXT_STEP autoreset: the
        step after a sub-env's last decision resets it and ignores its action."""
        envs = self.envs
        observation, info = envs.reset(seed=self._env_seed())
        state = self.policy.initial_state(envs.num_envs)
        steps: list[list[tuple[int, np.ndarray, float]]] = [[] for _ in range(envs.num_envs)]
        resetting = np.zeros(envs.num_envs, dtype=bool)  # this step autoresets the sub-env
        done: list[Episode] = []
        while len(done) < n:
            names = self._check_tasks(observation, info, ~resetting)
            mask = self._action_masks(info)
            active = np.flatnonzero(~resetting)
            actions = np.zeros(envs.num_envs, dtype=np.int64)
            sub_state = (state[0][active], state[1][active])
            sub_obs = {k: np.asarray(v)[active] for k, v in observation.items()}
            actions[active], logp, sub_state = self.act(sub_obs, mask[active], sub_state)
            state[0][active], state[1][active] = sub_state
            observation, reward, terminated, truncated, info = envs.step(actions)
            for k, j in enumerate(active):
                steps[j].append((int(actions[j]), mask[j].copy(), float(logp[k])))
                if truncated[j]:
                    raise RuntimeError(
                        "an MNMS episode was truncated (a TimeLimit wrapper?); MNMS-v2 episodes "
                        "end only by termination after the last decision"
                    )
                if terminated[j]:
                    done.append(self._finish(names[j], steps[j], float(reward[j]), info, j))
                    steps[j] = []
            resetting = terminated | truncated
        return done

    def _finish(
        self,
        task: str,
        steps: list[tuple[int, np.ndarray, float]],
        reward: float,
        info: dict,
        j: int,
    ) -> Episode:
        actions, masks, logp = zip(*steps, strict=True)
        if len(actions) != len(self.sizes):
            raise RuntimeError(
                f"an episode ended after {len(actions)} decisions; the observation space "
                f"declares {len(self.sizes)}"
            )
        reported = "child" in info and info["_child"][j]
        child = Child.from_info(unbatch_info(info["child"], j)) if reported else None
        episode = Episode(
            task,
            np.array(actions, dtype=np.int64),
            np.stack(masks),
            np.array(logp, dtype=np.float32),
            reward,
            child,
        )
        self.task_masks[task] = episode.masks
        return episode

    def _check_tasks(self, observation: dict, info: dict, rows: np.ndarray) -> list[str]:
        """Each sub-env's task name; checked against `info["task"]` when the env reports it."""
        names = [self.task_names[int(i)] for i in observation["task"]]
        if self._named and "task" in info:
            for j in np.flatnonzero(rows & info["_task"]):
                if info["task"][j] != names[j]:
                    raise RuntimeError(
                        f"observation task index {int(observation['task'][j])} is "
                        f"{names[j]!r} in the agent's task list {list(self.task_names)}, but "
                        f"info['task'] says {info['task'][j]!r}; the list must follow the "
                        "env's task indices"
                    )
        return names

    def _action_masks(self, info: dict) -> np.ndarray:
        """`(num_envs, num_actions)`: `info["action_mask"]`, else the env's `action_masks()`."""
        if "action_mask" in info:
            return np.asarray(info["action_mask"], dtype=bool)
        base = self.envs.unwrapped
        if hasattr(base, "call"):  # Sync/AsyncVectorEnv: each sub-env's masks
            return np.stack(base.call("action_masks")).astype(bool)
        return np.asarray(base.action_masks(), dtype=bool).reshape(self.envs.num_envs, -1)

    def _env_seed(self) -> int:
        """The env seed of the current update: fixed by the agent's seed and the update index."""
        return int(np.random.SeedSequence([self.seed, self.num_updates]).generate_state(1)[0])

    # ---------------------------------------------------------------------------- saving

    def _make_optimizer(self) -> torch.optim.Optimizer:
        """Adam over the trainable weights: all of them, or with `trained_tasks` set only the
        task embedding table, whose other rows get a zero gradient (so Adam never moves them)."""
        embedding = self.policy.task_embedding.weight
        if self.trained_tasks is None:
            return torch.optim.Adam(self.policy.parameters(), lr=self.config.learning_rate)
        for parameter in self.policy.parameters():
            parameter.requires_grad_(parameter is embedding)
        rows = torch.tensor([[name in self.trained_tasks] for name in self.task_names]).float()
        embedding.register_hook(lambda grad: grad * rows)
        return torch.optim.Adam([embedding], lr=self.config.learning_rate)

    def save(self, path: str | Path) -> None:
        """Write the whole agent state to `path` atomically (a crash never leaves half a file),
        its history to the history file beside it (`checkpoint.pt`: `checkpoint.pt.history.jsonl`).
        Saving again to the same path appends the new children there, so a save costs the same
        however long the run."""
        write_checkpoint(self, path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        env: gym.Env | VectorEnv,
        *,
        freeze: bool = False,
        seed: int | None = None,
        tasks: Sequence[str] | None = None,
        new_task_init: NewTaskInit = "random",
        new_run: bool = False,
        overrides: Mapping[str, Any] | None = None,
    ) -> MNMS:
        """An agent restored from `path` onto `env`.

        Same task list as the checkpoint (and `new_run=False`): an exact resume (weights, optimizer,
        baselines, replay, RNG, counters and history, the last from the history file beside it).
        Otherwise a new run from the checkpoint's policy, a transfer when `env` has new tasks: each
        task the checkpoint knows keeps its embedding and baseline, each new task gets a fresh
        random embedding, every other weight and the RNG are kept; the optimizer, counters and
        history start anew (the history file is not read) and replayed children of tasks absent from
        `env` are dropped. `freeze=True` (transfer only) trains just the new tasks' embeddings.
        `seed` replaces the checkpoint's sampling RNG and env seeds with fresh ones (e.g. to repeat
        a transfer); None keeps them. `tasks` names the env's tasks as in `MNMS(...)`.
        `new_task_init` sets where a new task's embedding starts: `"random"` (the paper's choice,
        drawn from a stream of its own for each seed and task name; it may land in one source task's
        mode of the policy), `"mean"`, the mean of the checkpoint's task embeddings, or
        `"similar"`, the mean of those of its tasks with the new task's masks, or `"descriptor"`,
        the embedding of the one of those whose descriptor is nearest (`NEW_TASK_INITS`).
        `overrides` replaces fields of the checkpoint's `MNMSConfig` (e.g. `batch_size` or
        `replay`; the network's sizes must stay).
        """
        if new_task_init not in NEW_TASK_INITS:
            raise ValueError(f"new_task_init={new_task_init!r}; accepted: {list(NEW_TASK_INITS)}")
        state = read_checkpoint(path)
        config = restored_config(state, overrides)
        agent = cls(env, config, seed=state["seed"] if seed is None else seed, tasks=tasks)
        resume = not new_run and list(agent.task_names) == state["task_names"]
        if not resume and not new_run and sorted(agent.task_names) == sorted(state["task_names"]):
            warnings.warn(
                f"the env's tasks {list(agent.task_names)} are the checkpoint's in another order "
                f"({state['task_names']}), so this is a new run from its policy (counters and "
                "history start anew, and a save to the same path replaces its history); make "
                "the env with the checkpoint's order to resume it",
                stacklevel=2,
            )
        new = [name for name in agent.task_names if name not in state["task_embeddings"]]
        restore_policy(
            agent,
            state,
            path,
            new_task_init=new_task_init,
            freeze=freeze,
            resume=resume,
            new_masks=env_masks(agent.envs, new) if new_task_init in LIKE_MASKS else None,
        )
        restore_state(agent, state, path, resume=resume, keep_rng=seed is None)
        return agent
