"""mnms-env: Multitask Neural Model Search as Gymnasium environments.

Importing the package registers `MNMS-v0` and `MNMS-OneShot-v0`; `gym.make("mnms_env:MNMS-v0")`
imports it on demand.
"""

from gymnasium.envs.registration import register, registry

from mnms_env.child import ChildResult
from mnms_env.evaluate import ChildRequest, Evaluator, SequentialEvaluator
from mnms_env.features import featurize
from mnms_env.space import ChildConfig, Decision, SearchSpace, default_space
from mnms_env.store import ResultStore
from mnms_env.tasks import Task, TaskError, TaskInfo, list_tasks, make_task, register_task

__version__ = "0.1.0"

for _id, _entry in (
    ("MNMS-v0", "mnms_env.env:MNMSEnv"),
    ("MNMS-OneShot-v0", "mnms_env.env:MNMSOneShotEnv"),
):
    if _id not in registry:
        register(id=_id, entry_point=_entry, disable_env_checker=False)

__all__ = [
    "ChildConfig",
    "ChildRequest",
    "ChildResult",
    "Decision",
    "Evaluator",
    "ResultStore",
    "SearchSpace",
    "SequentialEvaluator",
    "Task",
    "TaskError",
    "TaskInfo",
    "default_space",
    "featurize",
    "list_tasks",
    "make_task",
    "register_task",
]
