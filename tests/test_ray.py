"""`RayEvaluator` on local Ray clusters: the evaluator contract, results equal to the sequential
reference, the store written by the driver alone, interrupts, a node dying mid-child, the CLI.

One local cluster of 2 CPUs serves the module. The two-node cluster whose node is removed runs
in a subprocess under a time limit, so a regression fails the test instead of hanging the suite;
an interrupt that failed to cancel leaves children training for minutes, far past the time
allowed for giving their CPUs back.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import ray
import torch
from small_space import SMALL
from test_cli import TINY_SPACE
from test_evaluators import RAW, TRAINED, EvaluatorContract

import agents.cli
from agents.cli import main
from mnms_env import (
    CachedEvaluator,
    ChildConfig,
    ChildRequest,
    Evaluator,
    RayEvaluator,
    ResultStore,
    SequentialEvaluator,
    TaskError,
    make_task,
    register_task,
    tasks,
)
from mnms_env.features import MissingExtraError
from mnms_env.ray_evaluator import check_reachable

CLUSTER_SECONDS = 180
"""The two-node scenario takes about 25 s on 2 cores; a hang is cut off here."""
SLOW = replace(RAW, batch_size=8)
SLOW_EPOCHS = 20_000
"""About 5 minutes of training per child (2,000 epochs took about 30 s): a child that an
interrupt failed to cancel holds its CPU far past the 60 s allowed for giving it back."""


def _auditor(log: str) -> Callable[[], None]:
    """A worker setup hook that appends to `log` every time the worker opens a SQLite file or
    unpickles a `ResultStore` (Python's audit events), from the worker's start."""

    def install() -> None:
        def hook(event: str, args: tuple) -> None:
            opened = event in ("open", "sqlite3.connect") and ".sqlite" in str(args[0])
            if opened or (event == "pickle.find_class" and args[1] == "ResultStore"):
                with open(log, "a") as out:
                    out.write(f"{event} {args[0]}\n")

        sys.addaudithook(hook)

    return install


@pytest.fixture(scope="module", autouse=True)
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The module's local cluster; yields the file its workers' audit events go to. The
    variables Ray sets in this process (`PYTHONBREAKPOINT`, ...) are unset after it."""
    audit = tmp_path_factory.mktemp("ray-audit") / "events"
    environ = dict(os.environ)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"worker_process_setup_hook": _auditor(str(audit))},
    )
    yield audit
    ray.shutdown()
    os.environ.clear()
    os.environ.update(environ)


class TestRayEvaluator(EvaluatorContract):
    @pytest.fixture
    def evaluator(self) -> Evaluator:
        return RayEvaluator()

    @pytest.fixture
    def requests(self) -> list[ChildRequest]:
        return TRAINED


def _without_seconds(results: list) -> list:
    return [replace(r, seconds=0.0) for r in results]


def test_results_equal_the_sequential_evaluators_on_the_same_requests() -> None:
    text = ChildConfig(representation="char-hash", representation_size=512, width=16)
    requests = [
        *TRAINED,
        ChildRequest.for_task("langid-es", text, seed=3),
        ChildRequest.for_task("langid-es", replace(text, dropout=0.3, hidden_layers=0), seed=4),
    ]
    got = RayEvaluator().evaluate(requests)
    assert _without_seconds(got) == _without_seconds(_sequential(requests))


def _sequential(requests: list[ChildRequest]) -> list:
    """The reference's results, on one intra-op thread as the workers train (one per CPU
    reserved), so that even float rounding is the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return SequentialEvaluator(device="cpu").evaluate(requests)
    finally:
        torch.set_num_threads(threads)


def test_workers_find_tasks_through_the_evaluators_lookup_and_check_fingerprints() -> None:
    mine = replace(make_task("wine"), name="my-wine")
    evaluator = RayEvaluator(tasks={"my-wine": mine}.__getitem__)
    (result,) = pickle.loads(pickle.dumps(evaluator)).evaluate([ChildRequest.for_task(mine, RAW)])
    (reference,) = _sequential(TRAINED[:1])
    assert replace(result, seconds=0.0) == replace(reference, seconds=0.0)
    stale = replace(TRAINED[0], fingerprint="0123456789abcdef")
    with pytest.raises(TaskError, match="fingerprint 0123456789abcdef.*make the request again"):
        RayEvaluator().evaluate([stale])


def test_a_task_only_the_driver_knows_trains_on_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers know the package's tasks by name; a task registered at run time, or a file path
    relative to the driver's folder, reaches them as the driver's data."""
    monkeypatch.setattr(tasks, "_REGISTRY", dict(tasks._REGISTRY))  # "toy" does not leak
    rows = [{"text": f"{'good' if i % 2 else 'bad'} thing {i}", "label": i % 2} for i in range(60)]
    (tmp_path / "toy.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    register_task("toy", tmp_path / "toy.jsonl")
    monkeypatch.chdir(tmp_path)  # the workers stay in the folder they started in
    text = ChildConfig(representation="char-hash", representation_size=64, width=8)
    requests = [ChildRequest.for_task(name, text) for name in ("toy", "jsonl:toy.jsonl", "wine")]
    requests[2] = TRAINED[0]
    got = RayEvaluator().evaluate(requests)
    assert _without_seconds(got) == _without_seconds(_sequential(requests))


def test_a_ctrl_c_while_submitting_cancels_the_children_already_submitted() -> None:
    evaluator = RayEvaluator()
    evaluator.connect()
    submitted = []

    class Interrupted:  # Ray's remote function, with a Ctrl-C at the third submission
        def remote(self, *args):
            if len(submitted) == 2:
                raise KeyboardInterrupt
            submitted.append(remote.remote(*args))
            return submitted[-1]

    remote, evaluator._train = evaluator._train, Interrupted()
    slow = [ChildRequest.for_task("wine", SLOW, seed=s, budget=SLOW_EPOCHS) for s in range(3)]
    with pytest.raises(KeyboardInterrupt):
        evaluator.evaluate(slow)
    assert len(submitted) == 2
    for ref in submitted:  # a child that trained on would end in a timeout, not a cancellation
        with pytest.raises(ray.exceptions.TaskCancelledError):
            ray.get(ref, timeout=CLUSTER_SECONDS)
    interrupted = time.perf_counter()  # and the cluster gets its CPUs back for the next search
    while ray.available_resources().get("CPU", 0) < 2:
        assert time.perf_counter() - interrupted < 60, "the cancelled children hold their CPUs"
        time.sleep(0.1)


def test_the_envs_train_through_it(tmp_path: Path) -> None:
    evaluator = RayEvaluator()
    env = gym.make("MNMS-v2", task="wine", space=SMALL, evaluator=evaluator, store=None)
    _, info = env.reset(seed=0)
    for _ in range(len(SMALL)):
        _, reward, done, _, info = env.step(int(np.flatnonzero(info["action_mask"])[0]))
    assert done and 0 < reward <= 1 and info["child"]["device"] == "cpu"

    store = ResultStore(tmp_path / "r.sqlite")
    envs = gym.make_vec(
        "MNMS-v2",
        num_envs=3,
        vectorization_mode="vector_entry_point",
        task="wine",
        space=SMALL,
        evaluator=evaluator,
        store=store,
    )
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(len(SMALL)):
        actions = [rng.choice(np.flatnonzero(m)) for m in envs.action_masks()]
        _, rewards, terminated, _, _ = envs.step(actions)
    assert terminated.all() and ((rewards > 0) & (rewards <= 1)).all()
    assert 1 <= len(store) <= 3 and set(rewards) <= {row["val_accuracy"] for row in store.rows()}


def test_only_the_driver_opens_the_store(cluster: Path, tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results.sqlite")
    children = CachedEvaluator(RayEvaluator(), store).children(TRAINED)
    assert len(store) == len(TRAINED) and not any(child.cached for child in children)

    def probe(path: str) -> None:  # the control: the auditor is live in the workers
        import sqlite3

        sqlite3.connect(path).close()

    ray.get(ray.remote(probe).remote(str(tmp_path / "probe.sqlite")))
    events = cluster.read_text().splitlines()
    assert events and all("probe.sqlite" in event for event in events), events


@pytest.fixture
def python_ctrl_c() -> Iterator[None]:
    """Python's own Ctrl-C handler, whatever an earlier test left (a Ray Tune run keeps its own
    handler after it ends)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("interrupt", ["ctrl-c", "closed"])
def test_an_interrupt_cancels_the_outstanding_children_and_keeps_the_store(
    interrupt: str, tmp_path: Path, python_ctrl_c: None
) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    quick = TRAINED[0]
    slow = [ChildRequest.for_task("wine", SLOW, seed=s, budget=SLOW_EPOCHS) for s in range(3)]
    stream = CachedEvaluator(RayEvaluator(), store).stream_children([quick, *slow])
    _, first = next(stream)  # the quick child; slow ones hold both CPUs now, one is queued
    if interrupt == "closed":
        stream.close()
    else:  # Ctrl-C while the stream waits for the slow children
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):
            next(stream)
    interrupted = time.perf_counter()
    while ray.available_resources().get("CPU", 0) < 2:  # the slow children give back their CPUs
        assert time.perf_counter() - interrupted < 60, "the outstanding children still train"
        time.sleep(0.1)
    assert first.request == quick and len(store) == 1 and store.get(quick) == first.result


def test_a_cluster_that_lost_what_a_child_needs_raises_instead_of_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once no node is left with the CPUs a child reserves, the wait for it ends in an error
    naming what is missing (here the nodes' loss is simulated: the cluster reports no CPUs)."""
    evaluator = RayEvaluator()
    evaluator.recheck_s = 0.2
    stream = evaluator.stream([ChildRequest.for_task("wine", SLOW, seed=0, budget=SLOW_EPOCHS)])
    real = ray.cluster_resources
    calls = iter([real()])  # the first check (on connecting) sees the real cluster
    monkeypatch.setattr(ray, "cluster_resources", lambda: next(calls, {}))
    with pytest.raises(ValueError, match="the Ray cluster has 0 CPUs in all"):
        next(stream)  # (the stream cancels the child on its way out, as on Ctrl-C)


CLUSTER_SCENARIO = """
import json, sys, time
from dataclasses import replace
import ray
from ray.cluster_utils import Cluster
from mnms_env import CachedEvaluator, ChildConfig, ChildRequest, RayEvaluator, ResultStore
from mnms_env import make_task

store_path, log_path = sys.argv[1:]


def logged(name):  # the workers' task lookup: writes down the node of every child started
    with open(log_path, "a") as log:
        log.write(f"{ray.get_runtime_context().get_node_id()} {name}\\n")
    return make_task(name)


fast = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000}
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": fast})
node = cluster.add_node(num_cpus=1)
ray.init(address=cluster.address)
raw = ChildConfig(representation="raw", representation_size=0, width=16, batch_size=8)
quick = ChildRequest.for_task("wine", replace(raw, batch_size=64))
slow = [ChildRequest.for_task("breast-cancer", raw, seed=s, budget=120) for s in range(4)]
requests = [quick, *slow]
store = ResultStore(store_path)
seen = []
try:
    for i, child in CachedEvaluator(RayEvaluator(tasks=logged), store).stream_children(requests):
        seen.append(i)
        if len(seen) == 1:  # remove the second node while a slow child trains on it (about 2 s: a
            # shorter one could finish while a loaded machine removes the node)
            mine = [node.node_id, "breast-cancer"]
            while not any(line.split() == mine for line in open(log_path)):
                time.sleep(0.02)
            cluster.remove_node(node, allow_graceful=False)
    again = CachedEvaluator(RayEvaluator(tasks=logged), store).children(requests)
    print(json.dumps({"seen": seen, "stored": len(store), "node": node.node_id,
                      "again_cached": all(c.cached for c in again)}))
finally:  # also deletes the address file the cluster wrote, which would outlive it
    ray.shutdown()
    cluster.shutdown()
"""


def test_a_node_dying_mid_child_loses_no_child_and_stores_none_twice(tmp_path: Path) -> None:
    log = tmp_path / "started"
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CLUSTER_SCENARIO), str(tmp_path / "r"), str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=CLUSTER_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the cluster scenario hung (killed after {CLUSTER_SECONDS} s):\n{output}")
    assert process.returncode == 0, output
    report = json.loads(next(line for line in output.splitlines() if line.startswith('{"seen"')))
    assert sorted(report["seen"]) == list(range(5)) and report["stored"] == 5
    assert report["again_cached"]  # the second pass trained nothing
    started = [line.split()[0] for line in log.read_text().splitlines()]
    assert report["node"] in started and len(started) > 5  # the removed node's child ran again


def test_it_refuses_bad_resources_and_names_the_missing_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for bad, match in [
        ({"num_cpus": 0}, "num_cpus is the CPUs one child reserves, > 0; got 0"),
        ({"num_gpus": 1.5}, "a fraction up to 1 .* or a whole number; got 1.5"),
        ({"num_cpus": float("nan")}, "num_cpus is the CPUs one child reserves, > 0; got nan"),
        ({"num_gpus": float("nan")}, "or a whole number; got nan"),
        ({"max_retries": -1}, "max_retries must be an int >= 0, got -1"),
        ({"precision": "fp16"}, "precision must be one of"),
    ]:
        with pytest.raises(ValueError, match=match):
            RayEvaluator(**bad)
    with pytest.raises(TypeError, match="address is a str .* got int 6379"):
        RayEvaluator(address=6379)
    numpy = RayEvaluator(num_cpus=np.int64(2), num_gpus=np.float64(0.5), max_retries=np.int64(1))
    assert (numpy.num_cpus, numpy.num_gpus, numpy.max_retries) == (2, 0.5, 1)
    assert all(type(v) in (int, float) for v in (numpy.num_cpus, numpy.num_gpus, numpy.max_retries))
    with pytest.raises(ValueError, match="num_gpus=1 per child, but the Ray cluster has 0 GPUs"):
        RayEvaluator(num_gpus=1).evaluate(TRAINED[:1])
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'mnms-env\[ray\]'"):
        RayEvaluator().evaluate(TRAINED[:1])


def test_cli_search_and_run_train_on_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agents.cli, "default_space", lambda: TINY_SPACE)
    out = tmp_path / "ray"
    args = ["search", "--ray", "--tasks", "wine", "--children", "4", "--batch-size", "2"]
    assert main([*args, "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["children"] == 4
    assert ray.is_initialized()  # it trained on this process's connection and left it open
    rows = ResultStore(out / "results.sqlite").rows()
    requests = [
        ChildRequest.for_task(
            "wine", ChildConfig(**json.loads(row["config"])), seed=row["seed"], budget=row["budget"]
        )
        for row in rows
    ]
    reference = _sequential(requests)
    assert [row["val_accuracy"] for row in rows] == [r.val_accuracy for r in reference]

    history = tmp_path / "random.json"
    argv = ["run", "random", "--ray", "--tasks", "wine", "--children-per-task", "2"]
    assert main([*argv, "--store", str(tmp_path / "s.sqlite"), "--out", str(history)]) == 0
    assert len(json.loads(history.read_text())["children"]) == 2


@pytest.mark.parametrize("through", ["flag", "RAY_ADDRESS", "auto"])
def test_an_address_nothing_listens_at_is_refused_at_once(through: str, tmp_path: Path) -> None:
    """`ray.init` retries an unreachable address for minutes: a typo looked like a hang. The
    error says where the address came from and how to get a local cluster instead ("auto"
    means `$RAY_ADDRESS` when it is set, as for `ray.init`)."""
    with socket.socket() as probe:  # a free port, closed again: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    flag, env = (
        (f"--ray={address}", {})
        if through == "flag"
        else ("--ray" if through == "RAY_ADDRESS" else "--ray=auto", {"RAY_ADDRESS": address})
    )
    argv = ["search", "--tasks", "wine", "--children", "2", flag]
    done = subprocess.run(
        [sys.executable, "-m", "agents.cli", *argv, "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=CLUSTER_SECONDS,
        env={**os.environ, **env},
    )
    assert done.returncode == 2
    assert f"nothing accepts connections at '{address}'" in done.stderr
    fix = "pass address=None" if through == "flag" else f"RAY_ADDRESS='{address}' names no"
    assert fix in done.stderr and ("unset RAY_ADDRESS" in done.stderr) == (through != "flag")
    with pytest.raises(ConnectionError, match="'nohost' is not HOST:PORT, 'auto' or 'local'"):
        check_reachable("nohost")


def test_a_cluster_refused_by_the_command_that_started_it_is_shut_down(tmp_path: Path) -> None:
    script = f"""
import ray
from agents.cli import main
try:
    main(["search", "--ray", "--gpus-per-child", "1", "--tasks", "wine", "--out", {str(tmp_path)!r},
          "--children", "2"])
except SystemExit as exit:
    print("exit", exit.code, "connected", ray.is_initialized())
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=CLUSTER_SECONDS,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    assert "num_gpus=1.0 per child, but the Ray cluster has 0 GPUs" in done.stderr
    assert "exit 2 connected False" in done.stdout


@pytest.mark.parametrize(
    ("command", "extra", "message"),
    [
        ("search", ["--ray", "--backend", "table"], "--ray trains children on a Ray cluster, but "),
        ("run", ["--ray", "auto", "--backend", "table"], "--ray auto trains children on a Ray"),
        ("search", ["--ray", "--workers", "2"], "but --workers 2 sizes this machine's"),
        ("search", ["--ray", "--device", "cpu"], "leave --device cpu out"),
        ("run", ["--gpus-per-child", "0.5"], "--gpus-per-child 0.5 sizes the Ray tasks"),
    ],
)
def test_cli_refuses_ray_with_options_that_train_elsewhere(
    command: str, extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [command, *(["random"] if command == "run" else []), "--tasks", "wine"]
    with pytest.raises(SystemExit):
        main([*argv, *extra, "--out", str(tmp_path / "out")])
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()
