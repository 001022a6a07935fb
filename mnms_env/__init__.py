"""mnms-env: Multitask Neural Model Search as Gymnasium environments.

Importing the package registers `MNMS-v0` and `MNMS-OneShot-v0`; `gym.make("mnms_env:MNMS-v0")`
imports it on demand.
"""

from gymnasium.envs.registration import register, registry

from mnms_env.activations import register_activation
from mnms_env.batched import BatchedEvaluator
from mnms_env.evaluate import CachedEvaluator, Evaluator, SequentialEvaluator
from mnms_env.features import Featurizer, featurize, register_featurizer
from mnms_env.records import Child, ChildRequest, ChildResult
from mnms_env.space import ChildConfig, Decision, SearchSpace, default_space
from mnms_env.stacked_optim import Optimizer, VectorRule, register_optimizer
from mnms_env.store import ResultStore
from mnms_env.table import Table, TableEvaluator, benchmark_space, load_table
from mnms_env.tasks import Task, TaskError, TaskInfo, list_tasks, make_task, register_task

__version__ = "0.1.0"

if "MNMS-v0" not in registry:
    register(
        id="MNMS-v0",
        entry_point="mnms_env.env:MNMSEnv",
        vector_entry_point="mnms_env.vector:MNMSVectorEnv",
    )
if "MNMS-OneShot-v0" not in registry:
    register(id="MNMS-OneShot-v0", entry_point="mnms_env.env:MNMSOneShotEnv")

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
    "Optimizer",
    "ResultStore",
    "SearchSpace",
    "SequentialEvaluator",
    "Table",
    "TableEvaluator",
    "Task",
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
]
