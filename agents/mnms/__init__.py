"""The MNMS controller: a task-conditioned LSTM policy trained with REINFORCE and replay.

Multitask Neural Model Search (Wong and Gesmundo, 2017, arXiv 1710.10776), with the controller
input skip connection of Transfer Neural AutoML (Wong et al., NeurIPS 2018):

- `Controller`: an LSTM emits a child's decisions one at a time. Its input at each step is the
  embedding of the previous decision concatenated with the task's learned embedding; the output
  heads (one per decision) read the cell's output together with that input. Options the env
  marks invalid are masked out before sampling.
- `MNMS`: the agent. It samples children through the Gymnasium API only (any env with the
  MNMS-v2 contract, single or vector), and learns with REINFORCE on the per-task normalised
  advantage plus an off-policy replay bank shared by all tasks, with PPO-style clipped
  importance ratios. `save`/`load` carry the whole state (task embeddings keyed by task name),
  so a search resumes after a crash and a controller transfers to new tasks.
- `MNMSAskTell`: the same agent as an ask/tell search over anyone's categorical space, for
  objectives outside any env (the Ray Tune and Optuna integrations in `agents.integrations`).

```python
env = gym.make("MNMS-v2", tasks=["langid-es", "word-sentiment-en"])
agent = MNMS(env, seed=0).learn(200, checkpoint="mnms.pt")
agent = MNMS.load("mnms.pt", gym.make("MNMS-v2", task="langid-de"))  # transfer
```

One module per job: `config` (`MNMSConfig`), `policy` (the network and its masking), `rule`
(advantages and baselines), `records`, `replay` (the replay bank), `agent` (`MNMS`),
`checkpoint` (saving, loading and transfer), `history` (the append-only history file beside a
checkpoint), `envs` (env plumbing) and `ask_tell` (`MNMSAskTell`).
"""

from agents.mnms.agent import MNMS
from agents.mnms.ask_tell import MNMSAskTell
from agents.mnms.checkpoint import CHECKPOINT_FORMAT, NEW_TASK_INITS, read_history
from agents.mnms.config import MNMSConfig
from agents.mnms.envs import unbatch_info
from agents.mnms.policy import MASKED, Controller, State, masked_logits, one_thread
from agents.mnms.records import ChildRecord, UpdateStats
from agents.mnms.replay import ReplayBank
from agents.mnms.rule import normalised_advantages, seeded_baselines, updated_baselines

__all__ = [
    "CHECKPOINT_FORMAT",
    "MASKED",
    "MNMS",
    "NEW_TASK_INITS",
    "ChildRecord",
    "Controller",
    "MNMSAskTell",
    "MNMSConfig",
    "ReplayBank",
    "State",
    "UpdateStats",
    "masked_logits",
    "normalised_advantages",
    "one_thread",
    "read_history",
    "seeded_baselines",
    "unbatch_info",
    "updated_baselines",
]
