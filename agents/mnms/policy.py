"""The policy network: the task-conditioned LSTM `Controller`, the masking of invalid options, and
the one-thread rule it runs under."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from agents.mnms.config import MNMSConfig

MASKED = torch.finfo(torch.float32).min
"""Logit of an invalid option: exp() underflows to exactly 0, and unlike -inf it never makes
`0 * log 0` a NaN in the entropy."""

State = tuple[torch.Tensor, torch.Tensor]
"""The LSTM's recurrent state `(h, c)`, each `(batch, hidden_size)`."""


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
        self.temperature = config.temperature

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
        """`(batch, num_actions)` masked logits at the config's temperature; row b is scored by
        the head of decision `steps[b]`, and options past that decision's size are masked too."""
        out = torch.full((len(steps), self.num_actions), MASKED)
        for step in steps.unique().tolist():
            rows = steps == step
            out[rows, : self.sizes[step]] = self.heads[step](features[rows]) / self.temperature
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
