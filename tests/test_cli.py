"""`mnms search` and `mnms tasks` end to end: tiny real searches (budget 1, a tiny space)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import agents.cli
from agents.cli import main
from agents.mnms.checkpoint import read_checkpoint
from agents.portfolio import SourceScores
from mnms_env import BatchedEvaluator, ChildConfig, Decision, ResultStore, SearchSpace, load_table
from mnms_env.table_build import build_tables

TINY_SPACE = SearchSpace(
    (
        Decision("representation", ("char-hash", "raw")),
        Decision("hidden_layers", (0, 1)),
        Decision("learning_rate", (1e-2, 3e-2)),
    )
)
RUN_FILES = (
    "run.json",
    "results.sqlite",
    "checkpoint.pt",
    "checkpoint.pt.history.jsonl",
    "summary.json",
    "progress.png",
)


@pytest.fixture(autouse=True)
def _tiny_space(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agents.cli, "default_space", lambda: TINY_SPACE)


def test_tasks_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks"]) == 0
    listed = capsys.readouterr().out
    assert "langid-es" in listed and "word-sentiment-en" in listed and "digits" in listed


def test_search_writes_its_run_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    tasks = ["word-sentiment-en", "digits"]
    args = ["search", "--tasks", *tasks, "--children", "4", "--batch-size", "2", "--out", str(out)]
    assert main(args) == 0
    for name in RUN_FILES:
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["children"] == 4 and set(summary["per_task"]) <= set(tasks)
    for task, info in summary["per_task"].items():
        assert 0 <= info["best"]["test_accuracy"] <= 1 and info["best"]["config"]
        assert sum(info["representation_all"].values()) == info["children"]
        assert set(info["representation_all"]) == ({"raw"} if task == "digits" else {"char-hash"})
    printed = capsys.readouterr().out
    assert "best val" in printed and "representation (all" in printed
    events = EventAccumulator(str(out / "tensorboard"))
    tags = set(events.Reload().Tags()["scalars"])
    assert {"losses/policy_loss", "losses/entropy", "charts/cached_fraction"} <= tags
    assert any(tag.startswith("charts/best_so_far/") for tag in tags)

    # resume: same run, more children; nothing is trained twice
    assert main(["search", "--out", str(out), "--resume", "--children", "8"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["children"] == 8 and summary["settings"]["tasks"] == tasks
    assert len(ResultStore(out / "results.sqlite")) == summary["trained"] <= 8
    with pytest.raises(SystemExit):  # a total below what the run has would rewrite run.json
        main(["search", "--out", str(out), "--resume", "--children", "4"])
    assert "has 8 children already" in capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["children"] == 8
    with pytest.raises(SystemExit):  # a search that cannot start leaves no run directory
        main(["search", "--tasks", "langid-ez", "--out", str(tmp_path / "typo")])
    assert not (tmp_path / "typo").exists()

    with pytest.raises(SystemExit):  # refuses to overwrite a run
        main(["search", "--out", str(out), "--children", "2"])
    with pytest.raises(SystemExit):  # refuses to resume with other settings
        main(["search", "--out", str(out), "--resume", "--seed", "5"])
    assert "seed=5 (run: 0)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nor with another precision: the store does not key by it
        main(["search", "--out", str(out), "--resume", "--precision", "bf16"])
    assert "precision='bf16' (run: 'fp32')" in capsys.readouterr().err

    # transfer to a new task, training only its embedding
    new = tmp_path / "transfer"
    source = str(out / "checkpoint.pt")
    args = ["search", "--tasks", "wine", "--from", source, "--freeze", "--children", "2"]
    assert main([*args, "--out", str(new)]) == 0
    summary = json.loads((new / "summary.json").read_text())
    assert summary["children"] == 2 and list(summary["per_task"]) == ["wine"]


def test_a_search_keeps_its_precision_when_resumed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["search", "--tasks", "wine", "--children", "2", "--batch-size", "2"]
    assert main([*args, "--precision", "bf16", "--out", str(out)]) == 0
    assert main(["search", "--out", str(out), "--resume", "--children", "4"]) == 0
    assert json.loads((out / "run.json").read_text())["precision"] == "bf16"
    rows = ResultStore(out / "results.sqlite").rows()
    assert len(rows) > 2 and {row["device"] for row in rows} == {"cpu bf16"}


def test_search_and_run_on_the_table_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["search", "--backend", "table", "--tasks", "wine", "digits", "--children", "24"]
    assert main([*args, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for task, info in summary["per_task"].items():
        best = info["best"]
        table = load_table(task)
        config = ChildConfig(**best["config"])
        assert best["val_accuracy"] in table.val[table.row(config)]
    assert json.loads((out / "run.json").read_text())["backend"] == "table"
    with pytest.raises(SystemExit):  # a resume cannot switch to real training
        main(["search", "--out", str(out), "--resume", "--backend", "train"])

    # --from starts a new run, even on the checkpoint's own tasks, with this run's settings
    new = tmp_path / "new"
    argv = [*args[:-1], "8", "--from", str(out / "checkpoint.pt"), "--batch-size", "4"]
    assert main([*argv, "--no-replay", "--out", str(new)]) == 0
    state = torch.load(new / "checkpoint.pt", weights_only=True)
    assert state["num_children"] == 8
    assert (state["config"]["batch_size"], state["config"]["replay"]) == (4, False)
    with pytest.raises(SystemExit):
        main([*args, "--seed", "-1", "--out", str(tmp_path / "negative")])
    assert not (tmp_path / "negative").exists()

    history = tmp_path / "random.json"
    argv = ["run", "random", "--backend", "table", "--tasks", "wine", "--children-per-task", "5"]
    assert main([*argv, "--out", str(history)]) == 0
    saved = json.loads(history.read_text())
    assert len(saved["children"]) == 5 and all(c["seconds"] > 0 for c in saved["children"])
    assert "5 children (looked up in the tables)" in capsys.readouterr().out
    for refused, message in [
        (["--seed", "-1"], "--seed: '-1' is not an int in [0, 2**32)"),
        (["--device", "cpu"], "--device cpu: --backend table trains nothing"),
    ]:
        with pytest.raises(SystemExit):
            main([*argv, *refused, "--out", str(history)])
        assert message in capsys.readouterr().err

    # a resume keeps the run's sub-envs, so a new --children must be a multiple of them, and a
    # suggestion is one the run can reach (it suggested 0 or fewer children than it had)
    for children, message in [
        ("36", "must be a multiple of 8 (say 40; the run has 24)"),
        ("10", "must be a multiple of 8 (say 24; the run has 24)"),
        ("-5", "--children: '-5' is not an int >= 1"),
    ]:
        with pytest.raises(SystemExit):
            main(["search", "--out", str(out), "--resume", "--children", children])
        assert message in capsys.readouterr().err

    # a transfer baseline ranks configs on the source tasks' tables
    argv = ["run", "portfolio", "--backend", "table", "--tasks", "langid-de"]
    argv += ["--children-per-task", "3", "--sources", "langid-es", "langid-fr"]
    assert main([*argv, "--out", str(history)]) == 0
    first = json.loads(history.read_text())["children"][0]["config"]
    sources = SourceScores.from_tables(load_table(t) for t in ("langid-es", "langid-fr"))
    assert ChildConfig(**first) == sources.configs[0]
    with pytest.raises(SystemExit):  # without sources it cannot rank
        main(argv[:-3] + ["--out", str(history)])
    assert "portfolio ranks configs on source tasks: pass --sources" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the flag is named, not the Python argument
        main([*argv[:-5], "--children-per-task", "0", "--out", str(history)])
    assert "--children-per-task: '0' is not an int >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # only the transfer baselines take sources
        main(["run", "random", *argv[2:], "--out", str(history)])
    assert "--sources applies to the transfer baselines (portfolio" in capsys.readouterr().err


def test_a_table_run_resumes_only_on_the_tables_it_started_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A resume without the run's MNMS_TABLE_DIR looked its rewards up in the shipped tables."""
    halved = load_table("wine")
    replace(halved, val=halved.val * 0.5).save(tmp_path / "tables" / "wine.npz")
    monkeypatch.setenv("MNMS_TABLE_DIR", str(tmp_path / "tables"))
    out = str(tmp_path / "run")
    table = ["search", "--backend", "table", "--tasks", "wine", "digits", "--out", out]
    assert main([*table, "--children", "8"]) == 0
    monkeypatch.delenv("MNMS_TABLE_DIR")
    with pytest.raises(SystemExit):
        main(["search", "--out", out, "--resume", "--children", "16"])
    assert "the tables of ['wine'] differ from those this run" in capsys.readouterr().err
    monkeypatch.setenv("MNMS_TABLE_DIR", str(tmp_path / "tables"))
    assert main(["search", "--out", out, "--resume", "--children", "16"]) == 0
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["num_children"] == 16


def test_a_run_refuses_a_checkpoint_or_settings_file_that_is_not_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint copied in from another run was loaded as a transfer (or continued that
    run) and the run's history replaced; a damaged run.json failed without naming it."""
    table = ["search", "--backend", "table", "--children", "8"]
    ref, other = tmp_path / "ref", tmp_path / "other"
    assert main([*table, "--tasks", "wine", "digits", "--out", str(ref)]) == 0
    assert main([*table, "--tasks", "wine", "--seed", "1", "--out", str(other)]) == 0
    history = (other / "checkpoint.pt.history.jsonl").read_bytes()
    shutil.copy(ref / "checkpoint.pt", other / "checkpoint.pt")
    resume = ["search", "--out", str(other), "--resume", "--children", "16"]
    with pytest.raises(SystemExit):
        main(resume)
    err = capsys.readouterr().err
    assert "checkpoint.pt is not this run's checkpoint: tasks=['wine'] (checkpoint: " in err
    assert "seed=1 (checkpoint: 0)" in err
    assert (other / "checkpoint.pt.history.jsonl").read_bytes() == history  # nothing replaced
    stray = tmp_path / "stray"
    stray.mkdir()
    shutil.copy(ref / "checkpoint.pt", stray / "checkpoint.pt")
    with pytest.raises(SystemExit):
        main([*table, "--tasks", "wine", "digits", "--out", str(stray)])
    assert "holds a checkpoint.pt but no run.json" in capsys.readouterr().err
    for damaged in ("", '{"seed": "zero"}', '{"colour": 1}'):
        (ref / "run.json").write_text(damaged)
        with pytest.raises(SystemExit):
            main(["search", "--out", str(ref), "--resume"])
        assert f"{ref / 'run.json'} is not a run's settings (" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*table, "--tasks", "wine", "--from", str(ref), "--out", str(tmp_path / "t")])
    assert f"(a run's checkpoint is {ref / 'checkpoint.pt'})" in capsys.readouterr().err


def test_an_out_a_file_is_in_the_way_of_and_a_huge_seed_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """(`mnms run` wrote its history only after the whole run, and then failed.)"""
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("mine")
    Path("folder").mkdir()
    search = ["search", "--backend", "table", "--tasks", "wine", "--children", "8"]
    run = ["run", "random", "--backend", "table", "--tasks", "wine", "--children-per-task", "2"]
    for argv, message in [
        ([*search, "--out", "afile"], "--out: afile is a file, not a directory"),
        ([*search, "--out", "afile/sub"], "--out: afile is a file, not a directory"),
        ([*run, "--out", "folder"], "--out folder is a directory; name the history's JSON file"),
        ([*run, "--out", "afile/h.json"], "--out: afile is a file, not a directory"),
        ([*search, "--seed", str(2**32), "--out", "s"], "--seed: '4294967296' is not an int in"),
    ]:
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err
    assert Path("afile").read_text() == "mine" and sorted(os.listdir()) == ["afile", "folder"]


def test_a_transfer_resumed_from_another_folder_finds_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume before the first update starts from `--from` again, typed relative; a run.json
    written before `--from` was saved absolute still matches its `--from`."""
    monkeypatch.chdir(tmp_path)
    table = ["search", "--backend", "table", "--tasks", "wine", "--children", "8"]
    assert main([*table, "--out", "source"]) == 0
    assert main([*table, "--from", "source/checkpoint.pt", "--out", "new"]) == 0
    saved = json.loads(Path("new/run.json").read_text())
    assert saved["source"] == str(tmp_path / "source" / "checkpoint.pt")
    Path("early").mkdir()  # interrupted before its first checkpoint: only run.json is there
    shutil.copy("new/run.json", "early/run.json")
    monkeypatch.chdir(tmp_path / "source")
    assert main(["search", "--out", str(tmp_path / "early"), "--resume"]) == 0
    assert read_checkpoint(tmp_path / "early" / "checkpoint.pt")["num_children"] == 8

    monkeypatch.chdir(tmp_path)
    Path("new/run.json").write_text(json.dumps({**saved, "source": "source/checkpoint.pt"}))
    resume = ["search", "--out", "new", "--resume", "--children", "16"]
    assert main([*resume, "--from", "source/checkpoint.pt"]) == 0
    assert read_checkpoint(tmp_path / "new" / "checkpoint.pt")["num_children"] == 16


def test_search_trains_each_update_in_one_batched_call(tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []
    stream = BatchedEvaluator.stream

    def counted(self, requests):
        calls.append(len(requests))
        return stream(self, requests)

    monkeypatch.setattr(BatchedEvaluator, "stream", counted)
    out = tmp_path / "run"
    args = ["search", "--tasks", "wine", "--children", "12", "--batch-size", "4"]
    assert main([*args, "--out", str(out)]) == 0
    settings = json.loads((out / "run.json").read_text())
    assert settings["envs"] == 4  # gcd(batch size 4, 12 children): one call per update
    trained = len(ResultStore(out / "results.sqlite"))
    # At most one call per update (an update of stored children trains nothing), with the
    # first update's distinct children together; store hits and repeats are not trained.
    assert 1 <= len(calls) <= 3 and calls[0] >= 2 and sum(calls) == trained

    calls.clear()  # the reference path: one env, one child at a time, no batched call
    assert main([*args, "--envs", "0", "--out", str(tmp_path / "one")]) == 0
    assert calls == [] and json.loads((tmp_path / "one" / "run.json").read_text())["envs"] == 0


def test_search_refuses_envs_that_would_overshoot(tmp_path: Path) -> None:
    args = ["search", "--tasks", "wine", "--children", "10", "--envs", "3"]
    with pytest.raises(SystemExit):
        main([*args, "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_search_workers_change_no_result_and_need_batched_calls(tmp_path: Path) -> None:
    args = ["search", "--tasks", "wine", "--children", "8", "--batch-size", "4"]
    for workers in ("0", "2"):
        assert main([*args, "--workers", workers, "--out", str(tmp_path / workers)]) == 0
    summaries = [json.loads((tmp_path / w / "summary.json").read_text()) for w in ("0", "2")]
    assert summaries[0]["per_task"] == summaries[1]["per_task"]
    for refused in (["--envs", "0", "--workers", "2"], ["--workers", "-1"]):
        with pytest.raises(SystemExit):
            main([*args, *refused, "--out", str(tmp_path / "one")])
    assert not (tmp_path / "one").exists()


def _children_of(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan a container's init may never reap)."""
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rpartition(")")[2].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_sigterm_ends_a_search_and_its_training_workers(tmp_path: Path) -> None:
    """SIGTERM (timeout, Slurm, Kubernetes) once left the spawned workers running for good."""
    argv = ["search", "--tasks", "wine", "breast-cancer", "--children", "4000", "--workers", "2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", *argv, "--out", str(tmp_path / "run")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(workers := _children_of(process.pid)) < 2 and time.monotonic() < deadline:
            assert process.poll() is None, "the search ended before its workers started"
            time.sleep(0.2)
        assert len(workers) >= 2, "the workers never started"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 60
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_alive, workers)), "training workers outlived the search"
    finally:
        process.kill()
        for pid in workers if "workers" in locals() else ():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert (tmp_path / "run" / "run.json").exists()
    if checkpoint.exists():  # what finished before the signal resumes
        assert torch.load(checkpoint, weights_only=True)["num_children"] % 8 == 0


def test_a_run_from_before_the_vector_env_resumes_on_one_env(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["search", "--tasks", "wine", "--children", "2", "--batch-size", "2", "--envs", "0"]
    assert main([*args, "--out", str(out)]) == 0
    saved = json.loads((out / "run.json").read_text())
    del saved["envs"]  # as an older version wrote it
    (out / "run.json").write_text(json.dumps(saved))
    assert main(["search", "--out", str(out), "--resume", "--children", "4"]) == 0
    assert json.loads((out / "run.json").read_text())["envs"] == 0
    assert json.loads((out / "summary.json").read_text())["children"] == 4


def test_tables_build_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tables"
    assert (
        main(["tables", "build", "wine", "--out", str(out), "--seeds", "0", "--device", "cpu"]) == 0
    )
    table = load_table("wine", table_dir=out)
    assert table.val.shape == (300, 1) and (out / "build.sqlite").exists()
    assert main(["tables", "list", "--table-dir", str(out)]) == 0
    listed = capsys.readouterr().out
    assert "wine                     tabular    3 classes    300 configs x 1 seeds" in listed
    assert "langid-es" in listed  # the shipped tables too
    (out / "broken.npz").write_bytes(b"")
    assert main(["tables", "list", "--table-dir", str(out)]) == 0
    listed = capsys.readouterr().out
    assert "broken                   not searchable:" in listed and "300 configs x 1" in listed
    for argv, message in [  # refused by the flag's name, before a store is made
        (["--seeds", "0", "0"], "seeds must be 0 .. n-1 (each once"),
        (["--budget", "0"], "--budget: '0' is not an int >= 1"),
        (["--chunk", "0"], "--chunk: '0' is not an int >= 1"),
        (["--seeds", "0", "--tasks-again"], "unrecognized arguments: --tasks-again"),
    ]:
        with pytest.raises(SystemExit):
            main(["tables", "build", "wine", "--out", str(tmp_path / "refused"), *argv])
        assert message in capsys.readouterr().err and not (tmp_path / "refused").exists()
    with pytest.raises(SystemExit):
        main(["tables", "build", "wine", "digits", "wine", "--out", str(tmp_path / "refused")])
    assert "tasks repeats a task" in capsys.readouterr().err
    with pytest.raises(TypeError, match="tasks takes a list of task names, got the string"):
        build_tables("digits", tmp_path / "refused")  # it named the tasks 'd', 'i', 'g', ...
