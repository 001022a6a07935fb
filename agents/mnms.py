"""The MNMS controller: a task-conditioned LSTM policy trained with REINFORCE and replay.

Multitask Neural Model Search (Wong and Gesmundo, 2017, arXiv 1710.10776), with the controller
input skip connection of Transfer Neural AutoML (Wong et al., NeurIPS 2018):

- `Controller`: an LSTM emits a child's decisions one at a time. Its input at each step is the
  embedding of the previous decision concatenated with the task's learned embedding; the output
  heads (one per decision) read the cell's output together with that input. Options the env
  marks invalid are masked out before sampling.
- `MNMS`: the agent. It samples children through the Gymnasium API only (any env with the
  MNMS-v0 contract, single or vector), and learns with REINFORCE on the per-task normalised
  advantage plus an off-policy replay bank shared by all tasks, with PPO-style clipped
  importance ratios. `save`/`load` carry the whole state (task embeddings keyed by task name),
  so a search resumes after a crash and a controller transfers to new tasks.

```python
env = gym.make("MNMS-v0", tasks=["langid-es", "word-sentiment-en"])
agent = MNMS(env, seed=0).learn(200, checkpoint="mnms.pt")
agent = MNMS.load("mnms.pt", gym.make("MNMS-v0", task="langid-de"))  # transfer
```
"""

from __future__ import annotations

import functools
import numbers
import os
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv
from torch import nn

CHECKPOINT_FORMAT = 1
NEW_TASK_INITS = ("random", "mean")
MASKED = torch.finfo(torch.float32).min
"""Logit of an invalid option: exp() underflows to exactly 0, and unlike -inf it never makes
`0 * log 0` a NaN in the entropy."""

State = tuple[torch.Tensor, torch.Tensor]
"""The LSTM's recurrent state `(h, c)`, each `(batch, hidden_size)`."""


_KINDS = {  # a config field's annotation: (accepted values, stored as, what an error says)
    "int": (numbers.Integral, int, "a whole number"),
    "float": (numbers.Real, float, "a number"),
    "bool": ((bool, np.bool_), bool, "True or False"),
}


@dataclass(frozen=True)
class MNMSConfig:
    """Hyperparameters of the controller and its learning rule."""

    decision_embedding: int = 16
    """Size of the embedding of the previous decision, the per-step part of the LSTM input."""
    task_embedding: int = 16
    """Size of each task's learned embedding, fed with every LSTM input."""
    hidden_size: int = 64
    """LSTM units."""
    learning_rate: float = 3e-3
    """Adam step size."""
    batch_size: int = 8
    """Children sampled per update (rounded up to whole rounds of a vector env's sub-envs)."""
    baseline_decay: float = 0.9
    """Decay of the per-task baseline b(t), an exponential moving average of task t's rewards."""
    baseline_floor: float = 0.01
    """Lower bound on b(t) in A' = (R - b(t)) / b(t), so a task whose children all score ~0 does
    not divide by ~0."""
    entropy_coef: float = 0.01
    """Weight of the entropy bonus (summed over decisions) that keeps the policy exploring."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm."""
    update_epochs: int = 4
    """Gradient steps per update on the fresh batch plus replayed children. With 1 step and no
    replay the update is plain REINFORCE."""
    clip_ratio: float = 0.2
    """PPO clip range: importance ratios pi/mu outside [1 - clip, 1 + clip] give no gradient in
    the direction that would push them further."""
    replay: bool = True
    """Train on off-policy replayed children too (the paper's remedy for tasks collapsing into one
    policy). False: on-policy only."""
    replay_capacity: int = 2000
    """Children kept in the replay bank (all tasks together); the oldest are dropped first."""
    replay_batch: int = 32
    """Replayed children added to each update's batch, drawn uniformly from the bank."""
    task_init_std: float = 1.0
    """Standard deviation of a task embedding's random initialisation (also for tasks added at
    transfer time)."""

    def __post_init__(self) -> None:
        for f in fields(self):  # numpy numbers are accepted and stored as Python ones
            value = getattr(self, f.name)
            accepted, cast, wanted = _KINDS[f.type]
            is_bool = isinstance(value, bool | np.bool_)
            if not isinstance(value, accepted) or is_bool != (f.type == "bool"):
                raise ValueError(f"MNMSConfig.{f.name} must be {wanted}, got {value!r}")
            object.__setattr__(self, f.name, cast(value))
        positive = (
            "decision_embedding",
            "task_embedding",
            "hidden_size",
            "batch_size",
            "update_epochs",
            "replay_capacity",
            "learning_rate",
            "baseline_floor",
            "max_grad_norm",
            "task_init_std",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"MNMSConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(
                f"MNMSConfig.baseline_decay must be in [0, 1), got {self.baseline_decay}"
            )
        if not 0.0 < self.clip_ratio < 1.0:
            raise ValueError(f"MNMSConfig.clip_ratio must be in (0, 1), got {self.clip_ratio}")
        if self.entropy_coef < 0 or self.replay_batch < 0:
            raise ValueError(
                "MNMSConfig.entropy_coef and replay_batch must be >= 0, got "
                f"{self.entropy_coef} and {self.replay_batch}"
            )


# --------------------------------------------------------------------------------------------
# The policy network


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one CPU thread, then restore the thread count (children train with it).

    The controller's operations are tiny: extra intra-op threads only add synchronisation, and
    on a busy CPU their spin-waiting made a search 10-60x slower (measured on 2 shared cores).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _on_one_thread(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_thread():
            return method(*args, **kwargs)

    return wrapper


def masked_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`logits` with every option where `mask` is False set to `MASKED` (probability 0)."""
    if not bool(mask.any(dim=-1).all()):
        rows = torch.nonzero(~mask.any(dim=-1)).flatten().tolist()
        raise ValueError(f"the action mask marks no option valid (batch rows {rows})")
    return logits.masked_fill(~mask, MASKED)


class Controller(nn.Module):
    """The MNMS controller network; recurrent state is passed in and returned explicitly.

    Step i reads x_i = [E_dec(previous decision); E_task(t)] (a start token at step 0), updates
    (h_i, c_i) = LSTM(x_i, (h_{i-1}, c_{i-1})) and scores decision i's options with its own head
    on [h_i; x_i]: the skip connection lets the task embedding reach every softmax directly.
    """

    def __init__(self, sizes: Sequence[int], num_actions: int, num_tasks: int, config: MNMSConfig):
        super().__init__()
        self.sizes = tuple(int(n) for n in sizes)
        self.num_actions = num_actions
        offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.register_buffer(
            "offsets", torch.as_tensor(offsets, dtype=torch.long), persistent=False
        )
        self.decision_embedding = nn.Embedding(1 + sum(self.sizes), config.decision_embedding)
        self.task_embedding = nn.Embedding(num_tasks, config.task_embedding)
        nn.init.normal_(self.task_embedding.weight, std=config.task_init_std)
        width = config.decision_embedding + config.task_embedding
        self.cell = nn.LSTMCell(width, config.hidden_size)
        self.heads = nn.ModuleList(nn.Linear(config.hidden_size + width, n) for n in self.sizes)

    def initial_state(self, batch: int) -> State:
        zeros = torch.zeros(batch, self.cell.hidden_size)
        return zeros, zeros.clone()

    def tokens(self, steps: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """Input token of decision `steps` given the option index `previous` chosen at the step
        before: 0 is the start token, decision i's option o is `1 + offsets[i] + o`."""
        before = (steps - 1).clamp_min(0)
        return torch.where(steps > 0, 1 + self.offsets[before] + previous, 0)

    def forward(
        self, tokens: torch.Tensor, tasks: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, State]:
        """One LSTM step: features `[h; x]` for the heads, and the new state."""
        x = torch.cat([self.decision_embedding(tokens), self.task_embedding(tasks)], dim=-1)
        h, c = self.cell(x, state)
        return torch.cat([h, x], dim=-1), (h, c)

    def logits(
        self, features: torch.Tensor, steps: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """`(batch, num_actions)` masked logits; row b is scored by the head of decision
        `steps[b]`, and options past that decision's size are masked too."""
        out = torch.full((len(steps), self.num_actions), MASKED)
        for step in steps.unique().tolist():
            rows = steps == step
            out[rows, : self.sizes[step]] = self.heads[step](features[rows])
        in_range = torch.arange(self.num_actions) < torch.as_tensor(self.sizes)[steps, None]
        return masked_logits(out, mask & in_range)

    def evaluate(
        self, tasks: torch.Tensor, actions: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced pass over whole children: per-decision log-probabilities and entropies
        `(batch, decisions)` of `actions` `(batch, decisions)` under `masks`
        `(batch, decisions, num_actions)`."""
        state = self.initial_state(len(tasks))
        logps, entropies = [], []
        previous = torch.zeros_like(tasks)
        for step in range(len(self.sizes)):
            steps = torch.full_like(tasks, step)
            features, state = self(self.tokens(steps, previous), tasks, state)
            logp = torch.log_softmax(self.logits(features, steps, masks[:, step]), dim=-1)
            logps.append(logp.gather(1, actions[:, step, None]).squeeze(1))
            entropies.append(-(logp.exp() * logp).sum(dim=-1))
            previous = actions[:, step]
        return torch.stack(logps, dim=1), torch.stack(entropies, dim=1)


# --------------------------------------------------------------------------------------------
# The learning rule's pieces that deserve their own tests


def normalised_advantages(
    rewards: torch.Tensor, baselines: torch.Tensor, floor: float
) -> torch.Tensor:
    """MNMS's per-task normalised advantage A'(a, t) = (R(a, t) - b(t)) / b(t): tasks with
    different reward scales give gradients of similar size. `baselines` holds b(t) of each
    child's task; it is floored at `floor` so it never divides by ~0."""
    return (rewards - baselines) / baselines.clamp_min(floor)


def seeded_baselines(
    baselines: dict[str, float], tasks: Sequence[str], rewards: Sequence[float]
) -> dict[str, float]:
    """`baselines` plus a b(t) for each task seen for the first time: the mean of its rewards
    in this batch (so a new task's first advantages are centred, not all positive)."""
    out = dict(baselines)
    for task in dict.fromkeys(tasks):
        if task not in out:
            out[task] = float(
                np.mean([r for t, r in zip(tasks, rewards, strict=True) if t == task])
            )
    return out


def updated_baselines(
    baselines: dict[str, float], tasks: Sequence[str], rewards: Sequence[float], decay: float
) -> dict[str, float]:
    """b(t) <- decay * b(t) + (1 - decay) * R for each child in order (new tasks seeded first)."""
    out = seeded_baselines(baselines, tasks, rewards)
    for task, reward in zip(tasks, rewards, strict=True):
        out[task] = decay * out[task] + (1.0 - decay) * float(reward)
    return out


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class ChildRecord:
    """One finished episode: the child the controller designed and the reward it got."""

    update: int
    """Index of the update whose batch sampled it."""
    task: str
    decisions: tuple[int, ...]
    """Option index chosen at each decision."""
    reward: float
    child: dict[str, Any] | None
    """The env's `info["child"]` (config, accuracies, seconds, `cached`, ...), if it gave one."""


@dataclass(frozen=True)
class UpdateStats:
    """What one update did, for logging (`losses/...`, `charts/...`)."""

    update: int
    num_children: int
    """Children sampled so far, this update's included."""
    children: tuple[ChildRecord, ...]
    """This update's fresh children."""
    policy_loss: float
    entropy: float
    """Mean entropy per decision of the trained batch (before the last gradient step)."""
    approx_kl: float
    clip_fraction: float
    """Fraction of decisions whose importance ratio was outside the clip range."""
    grad_norm: float
    """Gradient norm before clipping, at the last gradient step."""
    replayed: int
    baselines: dict[str, float]


@dataclass
class _Episode:
    """A child with what training needs: behaviour log-probabilities and the masks it saw."""

    task: str
    actions: np.ndarray
    """`(decisions,)` int64."""
    masks: np.ndarray
    """`(decisions, num_actions)` bool."""
    logp: np.ndarray
    """`(decisions,)` float32: log mu(a_i | ...) under the policy that sampled it."""
    reward: float
    child: dict[str, Any] | None = field(default=None, repr=False)


class ReplayBank:
    """A FIFO bank of (task, decisions, masks, behaviour log-probabilities, reward), shared by
    all tasks (MNMS's off-policy multitask replay)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.episodes: list[_Episode] = []

    def __len__(self) -> int:
        return len(self.episodes)

    def add(self, episodes: Sequence[_Episode]) -> None:
        self.episodes.extend(episodes)
        del self.episodes[: max(0, len(self.episodes) - self.capacity)]

    def sample(self, n: int, rng: np.random.Generator) -> list[_Episode]:
        if n == 0 or not self.episodes:
            return []
        picks = rng.choice(len(self.episodes), size=min(n, len(self.episodes)), replace=False)
        return [self.episodes[i] for i in picks]

    def state_dict(self) -> dict[str, Any]:
        if not self.episodes:
            return {"tasks": []}
        return {
            "tasks": [e.task for e in self.episodes],
            "actions": torch.as_tensor(np.stack([e.actions for e in self.episodes])),
            "masks": torch.as_tensor(np.stack([e.masks for e in self.episodes])),
            "logp": torch.as_tensor(np.stack([e.logp for e in self.episodes])),
            "rewards": torch.as_tensor([e.reward for e in self.episodes], dtype=torch.float64),
        }

    def load_state_dict(self, state: dict[str, Any], keep: Callable[[str], bool]) -> None:
        """Restore the entries whose task `keep` accepts (a transferred agent drops the tasks
        its new env lacks)."""
        self.episodes = []
        for i, task in enumerate(state["tasks"]):
            if keep(task):
                actions, masks, logp = (state[k][i].numpy() for k in ("actions", "masks", "logp"))
                self.episodes.append(
                    _Episode(task, actions, masks, logp, float(state["rewards"][i]))
                )


# --------------------------------------------------------------------------------------------
# The agent


class MNMS:
    """The MNMS agent: a `Controller`, its optimizer, per-task baselines and a replay bank.

    `env` is any Gymnasium env (or `VectorEnv`, then each step advances one child per sub-env)
    with the MNMS-v0 contract: a `Discrete` action, a `Dict` observation with `task`
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
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.config = config if config is not None else MNMSConfig()
        self.seed = int(seed)
        self.envs = _as_vector_env(env)
        self.task_names, self._named = _task_names(self.envs, tasks)
        observation = self.envs.single_observation_space
        self.sizes = tuple(int(n) - 1 for n in observation["decisions"].nvec)
        self.num_actions = int(self.envs.single_action_space.n)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = Controller(
                self.sizes, self.num_actions, len(self.task_names), self.config
            )
        self.trained_tasks: tuple[str, ...] | None = None
        """None: every weight trains. A tuple (a `freeze=True` transfer): only these tasks'
        embeddings train; every other weight is frozen."""
        self.optimizer = self._make_optimizer()
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.baselines: dict[str, float] = {}
        self.replay = ReplayBank(self.config.replay_capacity)
        self.task_masks: dict[str, np.ndarray] = {}
        """The masks last seen for each task, `(decisions, num_actions)`: used to sample
        decisions outside the env (`sample_decisions`)."""
        self.history: list[ChildRecord] = []
        self.num_children = 0
        self.num_updates = 0

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
        if not isinstance(children, int) or children < 0:
            raise ValueError(f"children must be an int >= 0, got {children!r}")
        target = self.num_children + children
        while self.num_children < target:
            episodes = self._collect(min(self.config.batch_size, target - self.num_children))
            stats = self._update(episodes)
            if checkpoint is not None:
                self.save(checkpoint)
            if callback is not None:
                callback(self, stats)
        return self

    @_on_one_thread
    def _update(self, fresh: list[_Episode]) -> UpdateStats:
        """One update on the fresh children plus replayed ones (MNMS; PPO clipping)."""
        cfg = self.config
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
        # A'(a, t) = (R(a, t) - b(t)) / b(t): the per-task normalised advantage (MNMS).
        advantages = normalised_advantages(rewards, baselines, cfg.baseline_floor)[:, None]
        for _ in range(cfg.update_epochs):
            logp, entropy = self.policy.evaluate(tasks, actions, masks)  # log pi(a_i), H_i
            # Importance ratio pi(a_i) / mu(a_i) per decision: 1 on a fresh child's first step,
            # where the loss below is exactly REINFORCE, -A' * sum_i log pi(a_i).
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
        if task not in self.task_masks:
            raise ValueError(
                f"no masks seen yet for task {task!r}; sample_decisions needs one of "
                f"{sorted(self.task_masks)} (tasks the agent has sampled children for)"
            )
        index = self.task_names.index(task)
        masks = np.broadcast_to(self.task_masks[task], (n, *self.task_masks[task].shape))
        chosen = np.zeros((n, len(self.sizes)), dtype=np.int64)
        state = self.policy.initial_state(n)
        for step in range(len(self.sizes)):
            observation = {
                "task": np.full(n, index),
                "step": np.full(n, step),
                "decisions": chosen + 1,
            }
            actions, _, state = self.act(
                observation, masks[:, step], state, deterministic=deterministic
            )
            chosen[:, step] = actions
        return chosen

    def _collect(self, n: int) -> list[_Episode]:
        """Step the env until at least `n` children finish. Gymnasium's NEXT_STEP autoreset: the
        step after a sub-env's last decision resets it and ignores its action."""
        envs = self.envs
        observation, info = envs.reset(seed=self._env_seed())
        state = self.policy.initial_state(envs.num_envs)
        steps: list[list[tuple[int, np.ndarray, float]]] = [[] for _ in range(envs.num_envs)]
        resetting = np.zeros(envs.num_envs, dtype=bool)  # this step autoresets the sub-env
        done: list[_Episode] = []
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
                        "an MNMS episode was truncated (a TimeLimit wrapper?); MNMS-v0 episodes "
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
    ) -> _Episode:
        actions, masks, logp = zip(*steps, strict=True)
        if len(actions) != len(self.sizes):
            raise RuntimeError(
                f"an episode ended after {len(actions)} decisions; the observation space "
                f"declares {len(self.sizes)}"
            )
        child = unbatch_info(info["child"], j) if "child" in info and info["_child"][j] else None
        episode = _Episode(
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
        """Write the whole agent state to `path` atomically (a crash never leaves half a file)."""
        weights = self.policy.state_dict()
        table = weights.pop("task_embedding.weight")
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(self.config),
            "seed": self.seed,
            "sizes": list(self.sizes),
            "num_actions": self.num_actions,
            "task_names": list(self.task_names),
            "controller": weights,
            "task_embeddings": {name: table[i].clone() for i, name in enumerate(self.task_names)},
            "trained_tasks": None if self.trained_tasks is None else list(self.trained_tasks),
            "optimizer": self.optimizer.state_dict(),
            "baselines": dict(self.baselines),
            "replay": self.replay.state_dict(),
            "task_masks": {k: torch.as_tensor(v) for k, v in self.task_masks.items()},
            "torch_rng": self.generator.get_state(),
            "numpy_rng": self.rng.bit_generator.state,
            "num_children": self.num_children,
            "num_updates": self.num_updates,
            "history": [asdict(r) for r in self.history],
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        torch.save(state, partial)
        os.replace(partial, path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        env: gym.Env | VectorEnv,
        *,
        freeze: bool = False,
        seed: int | None = None,
        tasks: Sequence[str] | None = None,
        new_task_init: Literal["random", "mean"] = "random",
        new_run: bool = False,
        overrides: Mapping[str, Any] | None = None,
    ) -> MNMS:
        """An agent restored from `path` onto `env`.

        Same task list as the checkpoint (and `new_run=False`): an exact resume (weights,
        optimizer, baselines, replay, RNG, counters and history). Otherwise a new run from the
        checkpoint's policy, a transfer when `env` has new tasks: each task the checkpoint knows
        keeps its embedding and baseline, each new task gets a fresh random embedding, every
        other weight and the RNG are kept; the optimizer, counters and history start anew and
        replayed children of tasks absent from `env` are dropped. `freeze=True` (transfer only)
        trains just the new tasks' embeddings. `seed` replaces the checkpoint's sampling RNG and
        env seeds with fresh ones (e.g. to repeat a transfer); None keeps them. `tasks` names the
        env's tasks as in `MNMS(...)`. `new_task_init` sets where a new task's embedding starts:
        `"random"` (the paper's choice, drawn from a stream of its own for each seed and task
        name; it may land in one source task's mode of the policy) or `"mean"`, the mean of the
        checkpoint's task embeddings. `overrides` replaces fields of the checkpoint's
        `MNMSConfig` (e.g. `batch_size` or `replay`; the network's sizes must stay).
        """
        if new_task_init not in NEW_TASK_INITS:
            raise ValueError(f"new_task_init={new_task_init!r}; accepted: {list(NEW_TASK_INITS)}")
        try:
            state = torch.load(path, weights_only=True)
        except Exception as err:  # torch raises many kinds for a file that is not a checkpoint
            raise ValueError(
                f"{path}: not an MNMS checkpoint ({type(err).__name__}: {err})"
            ) from err
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"{path}: checkpoint format {found!r}, this version reads {CHECKPOINT_FORMAT}"
            )
        config = MNMSConfig(**{**state["config"], **(overrides or {})})
        agent = cls(env, config, seed=state["seed"] if seed is None else seed, tasks=tasks)
        if (list(agent.sizes), agent.num_actions) != (state["sizes"], state["num_actions"]):
            raise ValueError(
                f"{path} was trained on a space with option counts {state['sizes']} "
                f"(actions {state['num_actions']}); this env has {list(agent.sizes)} "
                f"(actions {agent.num_actions})"
            )
        resume = not new_run and list(agent.task_names) == state["task_names"]
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
                table[i] = _new_task_embedding(name, agent.seed, config)
        weights["task_embedding.weight"] = table
        agent.policy.load_state_dict(weights)
        if freeze:
            agent.trained_tasks = tuple(new)
        elif resume and state["trained_tasks"] is not None:
            agent.trained_tasks = tuple(state["trained_tasks"])
        agent.optimizer = agent._make_optimizer()
        agent.baselines = {k: v for k, v in state["baselines"].items() if k in agent.task_names}
        agent.replay.load_state_dict(state["replay"], keep=lambda t: t in agent.task_names)
        agent.task_masks = {
            k: v.numpy() for k, v in state["task_masks"].items() if k in agent.task_names
        }
        if seed is None:
            agent.generator.set_state(state["torch_rng"])
            agent.rng.bit_generator.state = state["numpy_rng"]
        if resume:
            agent.optimizer.load_state_dict(state["optimizer"])
            for group in agent.optimizer.param_groups:  # an override of the rate wins
                group["lr"] = config.learning_rate
            agent.num_children = state["num_children"]
            agent.num_updates = state["num_updates"]
            agent.history = [
                ChildRecord(**{**r, "decisions": tuple(r["decisions"])}) for r in state["history"]
            ]
        return agent


def _new_task_embedding(name: str, seed: int, config: MNMSConfig) -> torch.Tensor:
    """A random embedding for a task new to a checkpoint, from a stream of its own (seed and
    task name). Not row i of a fresh `Controller`: with the pre-training's seed that row is
    exactly source task i's initial embedding, which would start the new task in its mode."""
    entropy = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0]
    generator = torch.Generator().manual_seed(int(entropy))
    return torch.randn(config.task_embedding, generator=generator) * config.task_init_std


# --------------------------------------------------------------------------------------------
# Env plumbing


def _as_vector_env(env: gym.Env | VectorEnv) -> VectorEnv:
    """A vector env (a single env becomes a one-env `SyncVectorEnv`), checked against MNMS-v0."""
    envs = env if isinstance(env, VectorEnv) else SyncVectorEnv([lambda: env])
    mode = envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode != AutoresetMode.NEXT_STEP:
        raise ValueError(
            f"the vector env autoresets in mode {mode!r}; MNMS handles "
            f"{AutoresetMode.NEXT_STEP!r} (Gymnasium's default)"
        )
    observation, action = envs.single_observation_space, envs.single_action_space
    expected = {"task": spaces.Discrete, "step": spaces.Discrete, "decisions": spaces.MultiDiscrete}
    if not isinstance(observation, spaces.Dict) or any(
        not isinstance(observation.spaces.get(key), kind) for key, kind in expected.items()
    ):
        raise ValueError(
            "MNMS needs the MNMS-v0 observation: a Dict with task (Discrete), step (Discrete) "
            f"and decisions (MultiDiscrete); got {observation} (MNMS-OneShot-v0 and flattening "
            "wrappers do not fit)"
        )
    if not isinstance(action, spaces.Discrete):
        raise ValueError(f"MNMS needs a Discrete action space (MNMS-v0), got {action}")
    return envs


def _task_names(envs: VectorEnv, given: Sequence[str] | None) -> tuple[tuple[str, ...], bool]:
    """The names of the env's task indices: `given`, else the `task_names` attribute of the
    (sub-)envs, else `task-<index>`; and whether they are real names (checked against
    `info["task"]` while sampling)."""
    count = int(envs.single_observation_space["task"].n)
    base = envs.unwrapped
    if given is not None:
        names, named = tuple(given), True
    else:
        try:  # Sync/AsyncVectorEnv ask their sub-envs; a native vector env answers itself
            found = base.get_attr("task_names")[0] if hasattr(base, "get_attr") else None
            found = found if found is not None else base.task_names
            names, named = tuple(found), True
        except AttributeError:
            names, named = tuple(f"task-{i}" for i in range(count)), False
    if len(names) != count or len(set(names)) != len(names):
        raise ValueError(
            f"tasks must be {count} distinct names (the observation's task space is "
            f"Discrete({count})); got {list(names)}"
        )
    return names, named


def unbatch_info(info: dict[str, Any], j: int) -> dict[str, Any]:
    """Sub-env `j`'s part of a vector env's info dict, as plain Python values."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        present = info.get(f"_{key}")
        if key.startswith("_") or (present is not None and not present[j]):
            continue
        item = unbatch_info(value, j) if isinstance(value, dict) else value[j]
        out[key] = item.tolist() if isinstance(item, np.ndarray | np.generic) else item
    return out
