"""Best found test accuracy on the classic sentence-classification sets, next to Kim (2014).

    MNMS_DATA_DIR=../shared/data python benchmarks/reference.py --out runs/reference

One multitask MNMS search over `sst2`, `mr`, `subj`, `trec`, `cr` and `mpqa` together (the
default space, real training, `--children-per-task`, `--budget` epochs each; resumable through
its results store and per-run JSON). The default space holds MLPs over each text featurizer and
text CNNs over `tokens` (GloVe embeddings with the `glove` extra): `--representations tokens`
searches CNNs only, `--representations word-hash char-hash embedding-bag minilm` MLPs only. For
each task the reported accuracy is the test accuracy of the child with the best validation
accuracy: the test split never guides the search. Writes `reference.json` and `reference.md`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from controllers import markdown_table, run_or_load

from mnms_env import ChildConfig, default_space
from mnms_env.features import FEATURIZERS

KIM_2014 = {"sst2": 88.1, "mr": 81.5, "subj": 93.4, "trec": 93.6, "cr": 85.0, "mpqa": 89.6}
"""Kim (2014), *Convolutional Neural Networks for Sentence Classification*, Table 2: the best of
its four CNN variants per dataset (word2vec vectors pre-trained on 100B words of Google News)."""

KIM_PROTOCOL = {
    "sst2": "standard split; trained on phrases and sentences",
    "mr": "10-fold cross-validation",
    "subj": "10-fold cross-validation",
    "trec": "standard test split; 10% of train as dev",
    "cr": "10-fold cross-validation",
    "mpqa": "10-fold cross-validation",
}
OUR_PROTOCOL = {
    "sst2": "the same files (sentences only): train 6,920 / validation 872 / test 1,821",
    "trec": "the same files; 10% of train as validation; the 500-question test split",
}
"""Every other task: one seeded stratified 80/10/10 split of its single file."""

_DEFAULT = default_space()
TEXT_REPRESENTATIONS = tuple(
    name
    for name in _DEFAULT.decisions[_DEFAULT.names.index("representation")].options
    if FEATURIZERS[name].modality == "text"
)
"""The default space's featurizers for text tasks."""


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(KIM_2014), choices=list(KIM_2014))
    parser.add_argument("--children-per-task", type=int, default=60, help="children of each task")
    parser.add_argument("--budget", type=int, default=3, help="epochs per child")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--representations",
        nargs="+",
        default=list(TEXT_REPRESENTATIONS),
        choices=TEXT_REPRESENTATIONS,
        help="input representations the search may choose (default: all)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/reference"))
    args = parser.parse_args(argv)
    space = default_space().with_options("representation", args.representations)
    history = run_or_load(
        args.out / "runs" / f"mnms-seed{args.seed}.json",
        "mnms",
        args.seed,
        tasks=args.tasks,
        children_per_task=args.children_per_task,
        budget=args.budget,
        env_kwargs={"store": args.out / "results.sqlite", "space": space},
    )
    rows = []
    for task in args.tasks:
        best = history.best(task)
        rows.append(
            {
                "task": task,
                "test_accuracy": 100 * best.result.test_accuracy,
                "val_accuracy": 100 * best.result.val_accuracy,
                "config": best.request.config.to_json(),
                "architecture": "cnn" if best.request.config.is_cnn else "mlp",
                "kim_2014": KIM_2014[task],
                "protocol": OUR_PROTOCOL.get(task, "seeded stratified 80/10/10 split"),
                "kim_protocol": KIM_PROTOCOL[task],
            }
        )
    result = {
        "children_per_task": args.children_per_task,
        "budget": args.budget,
        "seed": args.seed,
        "wall_seconds": history.wall_seconds,
        "rows": rows,
    }
    (args.out / "reference.json").write_text(json.dumps(result, indent=1))
    (args.out / "reference.md").write_text(_markdown(rows, args))
    print(_markdown(rows, args))
    return rows


def _markdown(rows: list[dict], args: argparse.Namespace) -> str:
    header = [
        "task",
        f"MNMS test acc. (best-val child of {args.children_per_task})",
        "protocol",
        "Kim 2014 CNN",
        "Kim's protocol",
        "best child",
    ]
    return markdown_table(
        header,
        (
            [r["task"], f"{r['test_accuracy']:.1f}", r["protocol"], f"{r['kim_2014']:.1f}"]
            + [r["kim_protocol"], ChildConfig.from_json(r["config"]).describe()]
            for r in rows
        ),
    )


if __name__ == "__main__":
    main()
