"""mnms-env: Multitask Neural Model Search as Gymnasium environments.

Importing the package registers `MNMS-v2` and `MNMS-OneShot-v2`; `gym.make("mnms_env:MNMS-v2")`
imports it on demand. It also makes every process forked from this one train on one intra-op
thread (`_one_thread_after_fork`), so forked vector-env workers do not hang.
"""

import os

import torch
from gymnasium.envs.registration import register, registry

from mnms_env.activations import register_activation
from mnms_env.batched import BatchedEvaluator
from mnms_env.evaluate import CachedEvaluator, Evaluator, SequentialEvaluator
from mnms_env.features import Featurizer, featurize, register_featurizer, sentence_encoder
from mnms_env.ray_evaluator import RayEvaluator
from mnms_env.records import Child, ChildRequest, ChildResult
from mnms_env.space import ChildConfig, Decision, SearchSpace, default_space
from mnms_env.stacked_optim import FusedKernel, Optimizer, VectorRule, register_optimizer
from mnms_env.store import ResultStore
from mnms_env.table import Table, TableEvaluator, benchmark_space, load_table
from mnms_env.tasks import (
    Task,
    TaskCard,
    TaskError,
    TaskInfo,
    list_tasks,
    make_task,
    register_task,
)

__version__ = "0.1.0"


def _one_thread_after_fork() -> None:
    """Set torch to one intra-op thread in a freshly forked child, before it computes anything.

    Torch's CPU thread pool (OpenMP, MKL's included) does not survive a fork: once the parent has
    run one parallel operation (a child trained, or one 512x512 matrix product), the first
    parallel operation in a forked child waits forever at a barrier for threads that exist only
    in the parent. That is how `AsyncVectorEnv` and SB3's `SubprocVecEnv` with
    `start_method="fork"` hung, silently, in the first child's forward pass. With one thread torch
    never enters a parallel region, so the stale pool is never touched; and one thread per
    worker is what several workers on few cores want anyway. A worker that needs more threads
    must be spawned (`context="spawn"`): raising the count again in a forked child brings the
    hang back. Torch's inter-op pool (`torch.jit.fork` in TorchScript) is stale in a forked child
    too and cannot be resized; nothing here uses it.
    """
    torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork
    os.register_at_fork(after_in_child=_one_thread_after_fork)

if "MNMS-v2" not in registry:
    register(
        id="MNMS-v2",
        entry_point="mnms_env.env:MNMSEnv",
        vector_entry_point="mnms_env.vector:MNMSVectorEnv",
    )
if "MNMS-OneShot-v2" not in registry:
    register(id="MNMS-OneShot-v2", entry_point="mnms_env.env:MNMSOneShotEnv")

__all__ = [
    "BatchedEvaluator",
    "CachedEvaluator",
    "Child",
    "ChildConfig",
    "ChildRequest",
    "ChildResult",
    "Decision",
    "Evaluator",
    "Featurizer",
    "FusedKernel",
    "Optimizer",
    "RayEvaluator",
    "ResultStore",
    "SearchSpace",
    "SequentialEvaluator",
    "Table",
    "TableEvaluator",
    "Task",
    "TaskCard",
    "TaskError",
    "TaskInfo",
    "VectorRule",
    "benchmark_space",
    "default_space",
    "featurize",
    "list_tasks",
    "load_table",
    "make_task",
    "register_activation",
    "register_featurizer",
    "register_optimizer",
    "register_task",
    "sentence_encoder",
]
