"""The `mnms` command: `mnms search` runs the MNMS controller, `mnms tasks` lists the tasks,
`mnms run` runs any controller, `mnms tables` builds and lists benchmark tables.

`mnms search` with no arguments reproduces the paper's first multitask pair with offline data
(`langid-es` with `word-sentiment-en`) on the local device; `--ray [ADDRESS]` (search and run)
trains the children on a Ray cluster instead (`mnms_env.RayEvaluator`). A run directory holds
everything needed to inspect or resume it:

| file                          | what                                                           |
|-------------------------------|----------------------------------------------------------------|
| `run.json`                    | the run's settings (a resume reuses them)                      |
| `results.sqlite`              | every trained child (the store; none on the table backend)     |
| `checkpoint.pt`               | the agent, saved after every update (no history: bounded size) |
| `checkpoint.pt.history.jsonl` | every child sampled, one JSON line each, appended per update   |
| `tensorboard/`                | scalars: `charts/...` per task, `losses/...` per update        |
| `summary.json`                | per task: best child (config, val/test accuracy), decisions    |
| `progress.png`                | best-so-far and running-mean reward per task                   |
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.arguments import non_negative_float, non_negative_int, positive_int, seed_int
from agents.mnms import MNMS, MNMSConfig, UpdateStats
from agents.mnms.checkpoint import read_checkpoint
from agents.plots import png_figure
from agents.tables_cli import add_tables_parser, run_tables
from mnms_env import (
    ChildConfig,
    Evaluator,
    RayEvaluator,
    TaskError,
    default_space,
    list_tasks,
)
from mnms_env.batched import default_workers
from mnms_env.child import PRECISIONS, check_precision, resolve_device
from mnms_env.env import BACKENDS
from mnms_env.table import TableError, load_table
from mnms_env.tasks import task_list

PAPER_PAIR = ("langid-es", "word-sentiment-en")


@dataclass(frozen=True)
class SearchSettings:
    """What defines a search run (saved as `run.json`; a resume reuses it)."""

    tasks: tuple[str, ...] = PAPER_PAIR
    children: int = 200
    """Children to sample in all (the README gives the default run's time, measured by
    `benchmarks/main_job.py`)."""
    budget: int = 1
    """Training epochs per child."""
    seed: int = 0
    batch_size: int = MNMSConfig.batch_size
    replay: bool = MNMSConfig.replay
    source: str | None = None
    """Checkpoint to transfer from (`--from`)."""
    freeze: bool = False
    """With `source`: train only the new tasks' embeddings."""
    backend: str = "train"
    """"train" (real training) or "table" (rewards from the benchmark tables, in seconds)."""
    precision: str = "fp32"
    """"fp32", or "bf16" matrix products (`mnms_env.child.compute_precision`). Fixed on resume:
    the results store does not key children by precision, so a run keeps one."""
    tables: dict[str, str] | None = None
    """With `backend="table"`: each task's table digest (`Table.digest`), recorded when the run
    starts, so a resume that would look rewards up in other tables (another `MNMS_TABLE_DIR`, a
    table rebuilt since) is refused instead of mixing them into one history."""
    envs: int | None = None
    """Sub-envs of the MNMS vector env: the children of one step train in one batched call.
    None (the default) becomes, when a run starts, the greatest common divisor of `batch_size`
    and `children`: `batch_size` itself for the default run, so each update is one call, and
    otherwise whole rounds of calls that end exactly at `children`. 0: a single env that trains
    one child at a time (the reference path). Fixed on resume: another number of sub-envs
    samples other children."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", task_list(self.tasks))
        if self.children < 1 or self.budget < 1 or self.batch_size < 1:
            raise ValueError(
                f"children, budget and batch size must be >= 1; got {self.children}, "
                f"{self.budget} and {self.batch_size}"
            )
        if not 0 <= self.seed < 2**32:  # as run_controller takes it
            raise ValueError(f"--seed must be an int in [0, 2**32), got {self.seed}")
        if self.envs is not None and self.envs < 0:
            raise ValueError(f"--envs must be >= 0 (0: one child at a time), got {self.envs}")
        if self.envs and (self.batch_size % self.envs or self.children % self.envs):
            raise ValueError(
                f"--envs {self.envs} must divide --batch-size {self.batch_size} and --children "
                f"{self.children}, or updates would overshoot them; their greatest common "
                f"divisor is {math.gcd(self.batch_size, self.children)}"
            )
        if self.freeze and self.source is None:
            raise ValueError("--freeze applies to a transfer; pass --from CHECKPOINT")
        check_precision(self.precision)


FIXED_ON_RESUME = (
    "tasks",
    "budget",
    "seed",
    "batch_size",
    "replay",
    "source",
    "freeze",
    "backend",
    "precision",
    "envs",
)
RUNNING_MEAN = 20


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM (what `timeout`, Slurm and Kubernetes send) ends a command as Ctrl-C does:
    through its `finally` blocks, so the env closes its training workers instead of orphaning
    them. Only the main thread can set a handler, and one that ignores SIGTERM is kept."""
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous in (
        signal.SIG_IGN,  # the caller chose to ignore it
        None,  # a handler set from C, which Python cannot put back
    ):
        yield
        return
    signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    with _sigterm_exits():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "tasks":
        _print_tasks()
        return 0
    if args.command in ("run", "tables"):
        try:
            return run_baseline(args) if args.command == "run" else run_tables(args)
        except (ValueError, TaskError, TableError, ConnectionError) as err:
            parser.error(str(err))
    try:
        settings, out = _settings(args)
        evaluator = ray_evaluator(args, settings.backend, settings.precision)
        try:
            search(settings, out, device=args.device, workers=args.workers, evaluator=evaluator)
        finally:
            if evaluator is not None:
                evaluator.close()
    except (ValueError, TaskError, TableError, ConnectionError) as err:
        parser.error(str(err))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnms", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("tasks", help="list the registered tasks")
    search_parser = commands.add_parser(
        "search",
        help="run the MNMS controller",
        description="Search child networks for several tasks at once with the MNMS controller.",
    )
    add = search_parser.add_argument
    defaults = SearchSettings()
    add("--tasks", nargs="+", help=f"task names (default: {' '.join(defaults.tasks)})")
    add(
        "--children",
        type=positive_int,
        help=f"children to sample in all (default {defaults.children})",
    )
    add(
        "--budget",
        type=positive_int,
        help=f"training epochs per child (default {defaults.budget})",
    )
    add("--seed", type=seed_int, help=f"controller and env seed (default {defaults.seed})")
    add(
        "--batch-size",
        type=positive_int,
        help=f"children per update (default {defaults.batch_size})",
    )
    add("--no-replay", dest="replay", action="store_false", default=None, help="on-policy only")
    add("--out", type=Path, help="run directory (default runs/search-seed<seed>-<time>)")
    add("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    add("--from", dest="source", type=Path, help="transfer: start from this checkpoint")
    add("--freeze", action="store_true", default=None, help="with --from: train only new tasks")
    add("--device", help="torch device for the children (default: cuda if present, else cpu)")
    add(
        "--envs",
        type=int,
        help="sub-envs whose children train in one batched call (default: the greatest common "
        "divisor of --batch-size and --children); 0: one child at a time through a single env",
    )
    add(
        "--workers",
        type=non_negative_int,
        help="CPU processes that train the batched calls (default: one per core, at most "
        "--envs, and none on one core or a GPU); 0: train in this process. Results agree up "
        "to float rounding (a worker uses one thread), and a resume may change it",
    )
    _add_precision_argument(add, default=None)
    _add_backend_argument(add, default=None)
    _add_ray_arguments(add)
    _add_run_parser(commands)
    add_tables_parser(commands)
    return parser


def _add_run_parser(commands: Any) -> None:
    from agents.runner import CONTROLLERS

    run_parser = commands.add_parser(
        "run",
        help="run one controller for exactly as many children of each task",
        description="Run a controller (MNMS or a baseline) for exactly --children-per-task "
        "children of each task and write every child to --out as JSON.",
    )
    add = run_parser.add_argument
    add("name", choices=CONTROLLERS, help="the controller")
    add("--tasks", nargs="+", default=list(PAPER_PAIR), help="task names")
    add("--children-per-task", type=positive_int, default=20, help="per task (default 20)")
    add("--seed", type=seed_int, default=0, help="seed of the controller and the env (default 0)")
    add("--budget", type=positive_int, default=1, help="training epochs per child (default 1)")
    add("--store", type=Path, help="results store (default: the per-user store)")
    add("--out", type=Path, required=True, help="history JSON file to write")
    add("--device", help="torch device for the children (default: cuda if present, else cpu)")
    add(
        "--sources",
        nargs="+",
        help="transfer baselines (portfolio, portfolio-nearest, tpe-warm, source-best): the "
        "source tasks whose tables rank the configs (shipped, or in $MNMS_TABLE_DIR)",
    )
    _add_precision_argument(add, default="fp32")
    _add_backend_argument(add, default="train")
    _add_ray_arguments(add)


def _add_ray_arguments(add: Any) -> None:
    add(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="train the children as Ray tasks: on the cluster at ADDRESS (HOST:PORT, or auto: "
        "the one `ray start` started on this machine); without ADDRESS at $RAY_ADDRESS, else "
        "on a new local cluster (before a positional argument, write --ray=ADDRESS or --ray=)",
    )
    add(
        "--gpus-per-child",
        type=non_negative_float,
        help="with --ray: GPUs each child reserves (default 0: train on the workers' CPUs; "
        "0.25: four children share a GPU)",
    )


def ray_evaluator(args: argparse.Namespace, backend: str, precision: str) -> Evaluator | None:
    """The `RayEvaluator` that `--ray` asks for (None without it), refusing the options that
    say how to train children elsewhere."""
    if args.ray is None:
        if args.gpus_per_child is not None:
            raise ValueError(
                f"--gpus-per-child {args.gpus_per_child:g} sizes the Ray tasks; pass --ray too"
            )
        return None
    flag = f"--ray {args.ray}".strip()
    if backend == "table":
        raise ValueError(
            f"{flag} trains children on a Ray cluster, but --backend table looks them up and "
            "trains none; leave one of them out"
        )
    if getattr(args, "workers", None) is not None:
        raise ValueError(
            f"{flag} trains on the cluster's workers, but --workers {args.workers} sizes this "
            "machine's worker processes; leave --workers out"
        )
    if args.device is not None:
        raise ValueError(
            f"{flag} trains on the cluster's workers, on their GPUs with --gpus-per-child > 0, "
            f"else on their CPUs; leave --device {args.device} out"
        )
    evaluator = RayEvaluator(
        address=args.ray or None, num_gpus=args.gpus_per_child or 0, precision=precision
    )
    evaluator.connect()  # before the run starts: a wrong address leaves no run behind
    return evaluator


def _add_backend_argument(add: Any, default: str | None) -> None:
    add(
        "--backend",
        choices=BACKENDS,
        default=default,
        help="train: real training (default); table: rewards from the benchmark tables "
        "(tables beyond the shipped ones: $MNMS_TABLE_DIR)",
    )


def _add_precision_argument(add: Any, default: str | None) -> None:
    add(
        "--precision",
        choices=PRECISIONS,
        default=default,
        help="fp32 (default), or bf16: matrix products in bfloat16 (faster where the CPU or GPU "
        "has bf16 instructions)",
    )


def env_kwargs(
    backend: str,
    device: str | None,
    store: Path | None,
    precision: str = "fp32",
    evaluator: Evaluator | None = None,
) -> dict[str, Any]:
    """`gym.make` keywords for a backend: the tables, or real training on the default space
    (by `evaluator`, else by the env's own on `device` at `precision`). Training options given
    with the table backend are refused by their flags."""
    if backend == "table":
        given = {"--device": device, "--store": store, "--precision": precision}
        flags = [f"{k} {v}" for k, v in given.items() if v not in (None, "fp32")]
        if flags:
            raise ValueError(
                f"{', '.join(flags)}: --backend table trains nothing and stores nothing; leave "
                f"{'them' if len(flags) > 1 else 'it'} out"
            )
        return {"backend": "table"}
    store_kwargs = {"store": store} if store else {}
    trainer = (
        {"evaluator": evaluator}
        if evaluator is not None
        else {"device": device, "precision": precision}
    )
    return {"space": default_space(), **trainer, **store_kwargs}


def run_baseline(args: argparse.Namespace) -> int:
    """`mnms run`: one controller, `--children-per-task` of each task; writes the history JSON."""
    from agents.portfolio import SourceScores
    from agents.runner import TRANSFER, run_controller

    if args.name in TRANSFER and args.sources is None:  # the library's error names sources=
        raise ValueError(f"{args.name} ranks configs on source tasks: pass --sources TASK ...")
    if args.name not in TRANSFER and args.sources is not None:
        raise ValueError(
            f"--sources applies to the transfer baselines ({', '.join(TRANSFER)}); "
            f"{args.name!r} takes none"
        )
    if args.out.is_dir():  # refused now: the history is written after the whole run
        raise ValueError(f"--out {args.out} is a directory; name the history's JSON file")
    check_folder(args.out.parent, "--out")
    evaluator = ray_evaluator(args, args.backend, args.precision)
    try:
        history = run_controller(
            args.name,
            tasks=args.tasks,
            children_per_task=args.children_per_task,
            seed=args.seed,
            budget=args.budget,
            env_kwargs=env_kwargs(args.backend, args.device, args.store, args.precision, evaluator),
            sources=None
            if args.sources is None
            else SourceScores.from_tables(load_table(task) for task in args.sources),
        )
    finally:
        if evaluator is not None:
            evaluator.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(history.to_dict(), indent=2))
    how = (
        "looked up in the tables"
        if args.backend == "table"
        else f"{history.trained} trained, {history.cached} from the store"
    )
    print(
        f"{args.name}: {len(history.children)} children ({how}) in "
        f"{history.wall_seconds:.1f} s -> {args.out}"
    )
    for task in history.tasks:
        best = history.best(task).result
        print(f"  {task}: best val {best.val_accuracy:.3f} (test {best.test_accuracy:.3f})")
    return 0


def _settings(args: argparse.Namespace) -> tuple[SearchSettings, Path]:
    """The run's settings: the command line over the defaults, or over the saved `run.json`
    when resuming (which then refuses settings that would change the run)."""
    names = [f.name for f in fields(SearchSettings) if hasattr(args, f.name)]  # not tables
    given = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if "source" in given:  # absolute: a resume from another folder finds it
        given["source"] = str(Path(given["source"]).resolve())
    if "tasks" in given:
        given["tasks"] = tuple(given["tasks"])
    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs --out, the directory of the run to continue")
        saved_file = args.out / "run.json"
        if not saved_file.exists():
            raise ValueError(f"--resume: {saved_file} does not exist; is {args.out} a run?")
        saved = _saved_settings(saved_file)
        if saved.source is not None:  # a run.json from before --from was saved absolute
            saved = replace(saved, source=str(Path(saved.source).resolve()))
        changed = {
            k: v for k, v in given.items() if k in FIXED_ON_RESUME and v != getattr(saved, k)
        }
        if changed:
            raise ValueError(
                f"--resume continues the run as it was started; these settings differ from "
                f"{saved_file}: "
                + ", ".join(f"{k}={v!r} (run: {getattr(saved, k)!r})" for k, v in changed.items())
            )
        children = given.get("children", saved.children)
        if saved.envs and children % saved.envs:
            done = _children_done(args.out / "checkpoint.pt")
            up = -(-max(children, done) // saved.envs) * saved.envs
            raise ValueError(
                f"--children {children}: this run's {saved.envs} sub-envs were fixed "
                f"when it started ({saved_file}), and each call trains one child in each, so "
                f"--children must be a multiple of {saved.envs} (say {up}; the run has {done})"
            )
        return replace(saved, **given), args.out
    settings = SearchSettings(**given)
    if settings.source is not None and not Path(settings.source).is_file():
        run = Path(settings.source) / "checkpoint.pt"
        hint = f" (a run's checkpoint is {run})" if run.is_file() else ""
        raise ValueError(f"--from {settings.source}: no such checkpoint file{hint}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out if args.out is not None else Path("runs") / f"search-seed{settings.seed}-{stamp}"
    check_folder(out, "--out")
    if (out / "run.json").exists():
        raise ValueError(f"{out} already holds a run; pass --resume to continue it")
    if (out / "checkpoint.pt").exists():
        raise ValueError(
            f"{out} holds a checkpoint.pt but no run.json, so no run of this command; pass "
            "another --out"
        )
    return settings, out


def check_folder(folder: Path, flag: str) -> None:
    """Refuse `flag`'s path before any work where a file stands at `folder` or above it."""
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                raise ValueError(f"{flag}: {path} is a file, not a directory")
            return


def _saved_settings(path: Path) -> SearchSettings:
    """The settings a run saved in `path`, refused by name if the file is not such settings."""
    try:
        # A run.json from before the batched main job ran one child at a time: resume it so.
        return SearchSettings(**{"envs": 0, **json.loads(path.read_text())})
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(
            f"{path} is not a run's settings ({type(err).__name__}: {err}); a run.json holds "
            f"the fields of SearchSettings: {[f.name for f in fields(SearchSettings)]}"
        ) from err


def _children_done(checkpoint: Path) -> int:
    """How many children the run checkpointed at `checkpoint` has (0 before its first)."""
    return read_checkpoint(checkpoint)["num_children"] if checkpoint.exists() else 0


def search(
    settings: SearchSettings,
    out: Path,
    *,
    device: str | None = None,
    workers: int | None = None,
    evaluator: Evaluator | None = None,
) -> dict[str, Any]:
    """Run (or resume) a search in `out` and write its files; returns the summary. `workers`:
    CPU processes of the vector env's `BatchedEvaluator` (None: `default_workers`).
    `evaluator` trains the children instead of the env's own, and stays open for the caller
    to close."""
    from torch.utils.tensorboard import SummaryWriter  # slow import; only `search` needs it
    from tqdm import tqdm

    if evaluator is not None and (device, workers) != (None, None):
        raise ValueError(
            f"device={device!r} and workers={workers!r} configure the env's own evaluator; "
            "with evaluator= leave them None"
        )
    if settings.envs is None:
        settings = replace(settings, envs=math.gcd(settings.batch_size, settings.children))
    if settings.backend == "table":
        settings = replace(settings, tables=_same_tables(settings))
    batched = settings.envs > 0 and settings.backend == "train"
    if workers and not batched:
        raise ValueError(
            f"--workers {workers} trains the vector env's batched calls; with --envs 0 or "
            "--backend table nothing trains in batches (leave --workers out)"
        )
    fresh = not out.exists()
    try:
        env, agent = _start(settings, out, device, workers, evaluator, batched)
    except BaseException:
        if fresh:  # a search that cannot start leaves no run directory (the store makes one)
            shutil.rmtree(out, ignore_errors=True)
        raise
    checkpoint = out / "checkpoint.pt"
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "run.json.partial"  # replaced whole: a kill never leaves half a file
    partial.write_text(json.dumps(asdict(settings), indent=2))
    partial.replace(out / "run.json")
    run_name = f"mnms__{'+'.join(settings.tasks)}__seed{settings.seed}"
    writer = SummaryWriter(str(out / "tensorboard"))
    writer.add_text(
        "hyperparameters", _markdown_table({**asdict(settings), **asdict(agent.config)})
    )
    bar = tqdm(total=settings.children, initial=agent.num_children, unit="child", desc=run_name)
    started, resumed_at = time.perf_counter(), agent.num_children

    def log(agent: MNMS, stats: UpdateStats) -> None:
        step = stats.num_children
        for task, rewards in _rewards_by_task(stats.children).items():
            writer.add_scalar(f"charts/reward/{task}", np.mean(rewards), step)
        for task, best in _best_so_far(agent).items():
            writer.add_scalar(f"charts/best_so_far/{task}", best, step)
        for task, baseline in stats.baselines.items():
            writer.add_scalar(f"charts/baseline/{task}", baseline, step)
        cached = [bool(r.child and r.child.cached) for r in stats.children]
        writer.add_scalar("charts/cached_fraction", np.mean(cached), step)
        rate = (step - resumed_at) / (time.perf_counter() - started)  # this process's children
        writer.add_scalar("charts/children_per_second", rate, step)
        for name in ("policy_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm"):
            writer.add_scalar(f"losses/{name}", getattr(stats, name), step)
        bar.update(len(stats.children))
        means = _rewards_by_task(agent.history)
        bar.set_postfix_str(
            " ".join(
                f"{t}: best {b:.3f} mean {np.mean(means[t]):.3f}"
                for t, b in _best_so_far(agent).items()
            )
        )

    try:
        agent.learn(
            max(0, settings.children - agent.num_children), checkpoint=checkpoint, callback=log
        )
    finally:  # also on Ctrl-C or SIGTERM: the checkpoint holds every finished update
        bar.close()
        writer.close()
        env.close()
    store = env.unwrapped.store  # None on the table backend: nothing is trained
    summary = _summary(agent, settings, run_name, trained=len(store) if store is not None else 0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _plot(agent, out / "progress.png", run_name)
    _print_summary(summary, out)
    return summary


def _same_tables(settings: SearchSettings) -> dict[str, str]:
    """The digests of the tables the run's tasks are looked up in now, refused if the run
    recorded others."""
    digests = {task: load_table(task).digest for task in settings.tasks}
    changed = [t for t in digests if settings.tables and settings.tables.get(t) != digests[t]]
    if changed:
        raise ValueError(
            f"the tables of {changed} differ from those this run started with (another "
            "MNMS_TABLE_DIR, or a table rebuilt since): its rewards would mix two tables; "
            "resume with the run's tables, or start a new run"
        )
    return digests


def _start(
    settings: SearchSettings,
    out: Path,
    device: str | None,
    workers: int | None,
    evaluator: Evaluator | None,
    batched: bool,
) -> tuple[gym.Env | gym.vector.VectorEnv, MNMS]:
    """The search's env and agent (`_agent`); the env is closed if the agent cannot be made."""
    store = out / "results.sqlite" if settings.backend == "train" else None
    kwargs = env_kwargs(settings.backend, device, store, settings.precision, evaluator)
    kwargs |= {"tasks": settings.tasks, "budget": settings.budget}
    if batched and evaluator is None:
        where = resolve_device(device)
        if workers and where.type != "cpu":
            raise ValueError(
                f"--workers {workers} trains in CPU processes, but the children train on "
                f"{where}; leave --workers out (or pass --workers 0)"
            )
        kwargs["workers"] = default_workers(where, settings.envs) if workers is None else workers
    if settings.envs == 0:
        env = gym.make("MNMS-v2", **kwargs)
    else:  # one sub-env per child of an update: its children train in one batched call
        env = gym.make_vec(
            "MNMS-v2",
            num_envs=settings.envs,
            vectorization_mode="vector_entry_point",
            **kwargs,
        )
    try:
        return env, _agent(settings, env, out / "checkpoint.pt")
    except BaseException:
        env.close()
        raise


def _agent(settings: SearchSettings, env: gym.Env | gym.vector.VectorEnv, checkpoint: Path) -> MNMS:
    """The agent of a new run, a transfer (`--from`), or a resumed run (`checkpoint` exists),
    which must not have more children than `settings.children` already."""
    if checkpoint.exists():
        _check_own(checkpoint, settings)
        agent = MNMS.load(checkpoint, env)
    elif settings.source is not None:
        agent = MNMS.load(
            settings.source,
            env,
            freeze=settings.freeze,
            seed=settings.seed,
            new_run=True,  # even on the checkpoint's own tasks: a new run, not its continuation
            overrides={"batch_size": settings.batch_size, "replay": settings.replay},
        )
    else:
        config = MNMSConfig(batch_size=settings.batch_size, replay=settings.replay)
        agent = MNMS(env, config, seed=settings.seed)
    if agent.num_children > settings.children:
        raise ValueError(
            f"--children {settings.children}: the run in {checkpoint.parent} has "
            f"{agent.num_children} children already; --children is the total to reach"
        )
    return agent


def _check_own(checkpoint: Path, settings: SearchSettings) -> None:
    """Refuse a checkpoint that is not of the run `settings` describe (one copied in from
    another run would be loaded as a transfer, or continue that run, and replace the history)."""
    state = read_checkpoint(checkpoint)
    config = state["config"]
    differ = {
        name: (mine, theirs)
        for name, mine, theirs in (
            ("tasks", list(settings.tasks), state["task_names"]),
            ("seed", settings.seed, state["seed"]),
            ("batch_size", settings.batch_size, config.get("batch_size")),
            ("replay", settings.replay, config.get("replay")),
            ("freeze", settings.freeze, state.get("trained_tasks") is not None),
        )
        if mine != theirs
    }
    if differ:
        raise ValueError(
            f"{checkpoint} is not this run's checkpoint: "
            + ", ".join(f"{k}={v[0]!r} (checkpoint: {v[1]!r})" for k, v in differ.items())
            + "; put the run's own checkpoint.pt back, or start a new run with another --out"
        )


def _rewards_by_task(records: Sequence[Any]) -> dict[str, list[float]]:
    by_task: dict[str, list[float]] = defaultdict(list)
    for record in records:
        by_task[record.task].append(record.reward)
    return by_task


def _best_so_far(agent: MNMS) -> dict[str, float]:
    return {task: max(r) for task, r in sorted(_rewards_by_task(agent.history).items())}


def _summary(
    agent: MNMS, settings: SearchSettings, run_name: str, *, trained: int
) -> dict[str, Any]:
    """The run's JSON summary; `trained` counts the store's children (a child sampled twice,
    or re-sampled after a resume, is trained once)."""
    per_task = {}
    for task in agent.task_names:
        records = [r for r in agent.history if r.task == task]
        if not records:
            continue
        best = max(records, key=lambda r: r.reward)
        representations = [r.child.request.config.representation for r in records]
        per_task[task] = {
            "children": len(records),
            "mean_reward": float(np.mean([r.reward for r in records])),
            "best": {
                "config": asdict(best.child.request.config),
                "val_accuracy": best.child.result.val_accuracy,
                "test_accuracy": best.child.result.test_accuracy,
                "child_index": agent.history.index(best) + 1,
            },
            "representation_all": dict(Counter(representations).most_common()),
            "representation_last_half": dict(
                Counter(representations[len(representations) // 2 :]).most_common()
            ),
        }
    return {
        "run_name": run_name,
        "settings": asdict(settings),
        "config": asdict(agent.config),
        "children": agent.num_children,
        "trained": trained,
        "per_task": per_task,
    }


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    print(f"\n{summary['children']} children, {summary['trained']} distinct trained -> {out}")
    for task, info in summary["per_task"].items():
        best = info["best"]
        config = ChildConfig(**best["config"]).describe()  # only what the child's design uses
        print(
            f"\n{task}: best val {best['val_accuracy']:.4f} test {best['test_accuracy']:.4f} "
            f"(child {best['child_index']}; {info['children']} children, "
            f"mean reward {info['mean_reward']:.4f})\n  {config}"
        )
        for label, key in (
            ("all", "representation_all"),
            ("last half", "representation_last_half"),
        ):
            counts = info[key]
            total = sum(counts.values())
            shares = ", ".join(f"{k} {v / total:.0%}" for k, v in counts.items())
            print(f"  representation ({label}, {total}): {shares}")


def _plot(agent: MNMS, path: Path, title: str) -> None:
    with png_figure(path, dpi=100, ncols=2, figsize=(11, 4), sharey=True) as (
        fig,
        (best_ax, mean_ax),
    ):
        for task in agent.task_names:
            index = [i for i, r in enumerate(agent.history, 1) if r.task == task]
            if not index:
                continue
            rewards = np.array([agent.history[i - 1].reward for i in index])
            best_ax.step(index, np.maximum.accumulate(rewards), where="post", label=task)
            cumulative = np.concatenate([[0.0], np.cumsum(rewards)])
            starts = np.maximum(0, np.arange(1, len(rewards) + 1) - RUNNING_MEAN)
            ends = np.arange(1, len(rewards) + 1)
            mean_ax.plot(
                index, (cumulative[ends] - cumulative[starts]) / (ends - starts), label=task
            )
        best_ax.set(
            title="best so far", xlabel="children (all tasks)", ylabel="validation accuracy"
        )
        mean_ax.set(
            title=f"mean of the task's last {RUNNING_MEAN} children", xlabel="children (all tasks)"
        )
        best_ax.legend()
        fig.suptitle(title)


def _markdown_table(values: dict[str, Any]) -> str:
    rows = "\n".join(f"|{key}|{value}|" for key, value in values.items())
    return f"|param|value|\n|-|-|\n{rows}"


def _print_tasks() -> None:
    for info in list_tasks():
        sizes = "/".join(str(info.sizes[s]) for s in ("train", "validation", "test"))
        classes = f"{info.num_classes} classes"
        print(f"{info.name:24} {info.modality:8} {classes:>10}  {sizes:>20}  {info.source}")


if __name__ == "__main__":
    sys.exit(main())
