"""Plug in your own agent, task and search space: a hand-written REINFORCE loop on MNMS-v2.

The agent is a table of logits per (task, decision, option), sampled with the env's action mask
(invalid options get probability 0) and trained with REINFORCE (Williams, 1992):

    grad J = E[(R - b(task)) * sum_i grad log pi(a_i | task, i)]

where b(task) is a moving average of the task's rewards. Runs in seconds: `python
examples/custom_agent.py`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np

from mnms_env import Decision, SearchSpace, register_task

# A custom task: a jsonl file with "text" and "label" (cut 80/10/10 into train/val/test).
rng = np.random.default_rng(0)
words = {0: ["bad", "awful", "dull", "poor"], 1: ["good", "great", "fine", "superb"]}
filler = ["the", "film", "was", "plot", "and", "a", "very", "acting", "story", "quite"]
path = Path(tempfile.mkdtemp()) / "toy-sentiment.jsonl"
with path.open("w") as f:
    for i in range(400):
        label = i % 2
        text = rng.choice(filler, 6).tolist() + [str(rng.choice(words[label]))]
        rng.shuffle(text)
        f.write(json.dumps({"text": " ".join(text), "label": label}) + "\n")
register_task("toy-sentiment", path, modality="text", overwrite=True)

# A custom search space: any subset of `ChildConfig` fields, each with its options.
SPACE = SearchSpace(
    (
        Decision("representation", ("word-hash", "char-hash", "raw")),  # raw: tabular only
        Decision("representation_size", (256, 1024)),
        Decision("hidden_layers", (0, 1)),
        Decision("learning_rate", (0.003, 0.03, 0.3)),
    )
)
env = gym.make("mnms_env:MNMS-v2", tasks=["toy-sentiment", "wine"], space=SPACE, store=None)

# The agent: logits[task, decision, option], a per-task baseline, plain SGD on REINFORCE.
n_tasks, n_actions = env.observation_space["task"].n, env.action_space.n
logits = np.zeros((n_tasks, len(SPACE), n_actions))
baseline, lr, decay = np.full(n_tasks, 0.5), 1.0, 0.8
for episode in range(32):
    obs, info = env.reset(seed=episode)
    task, grads, terminated = obs["task"], np.zeros_like(logits[0]), False
    while not terminated:
        step, mask = obs["step"], info["action_mask"]
        z = np.where(mask, logits[task, step], -np.inf)  # invalid options: probability 0
        p = np.exp(z - z.max())
        p /= p.sum()
        action = rng.choice(n_actions, p=p)
        grads[step] += np.eye(n_actions)[action] - p  # grad of log pi(a | task, step)
        obs, reward, terminated, _, info = env.step(action)
    logits[task] += lr * (reward - baseline[task]) * grads  # ascend (R - b) grad log pi
    baseline[task] = decay * baseline[task] + (1 - decay) * reward
    child = info["child"]
    print(
        f"{episode:2d} {child['task']} val {reward:.3f} {child['config']['representation']}"
        f" lr={child['config']['learning_rate']}"
    )
for task, name in enumerate(env.unwrapped.task_names):  # the most likely valid design
    masks = env.unwrapped.space.masks(env.unwrapped.tasks[task].modality)
    best = np.where(masks, logits[task], -np.inf).argmax(axis=1)
    print(name, "->", [d.options[j] for d, j in zip(SPACE.decisions, best, strict=True)])
