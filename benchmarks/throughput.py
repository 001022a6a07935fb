"""Child-training throughput: sequential vs batched, and the env's per-step overhead.

    python benchmarks/throughput.py                      # CPU, or CUDA when present
    python benchmarks/throughput.py --device cpu --ks 1 8 32

Workloads:
- `dense`: features of SST-2's size (6,920 train x 384, 872 validation, 1,821 test; a fixed
  synthetic Gaussian mixture, so the benchmark needs no data directory), a 2x128 ReLU MLP, Adam,
  10 epochs, batch 64.
- `hashed-text`: the built-in `langid-es` with hashed character n-grams (4,096 buckets) and the
  same child.
The sequential rate is measured per workload and precision on a few children; the batched rate
at each K trains K children with distinct seeds in one `BatchedEvaluator` call. Both run in the
same process, one after the other, at the same precision (`--precisions`: float32, and bfloat16
matrix products), so their ratio compares like with like. Every rate is measured `--repeats`
times, interleaved, and the fastest is kept (as `timeit` does: on a shared machine noise only
slows a run down); the JSON keeps every sample. On a CPU the dense workload also times a bare
stacked loop (`bare_loop_rate`): the same children trained with nothing but their arithmetic,
roughly the most a stacked evaluator can reach on the machine. Writes JSON and a PNG, and with
`--profile` a table of where one batched call at the largest K spends its time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from agents.arguments import distinct, positive_int
from agents.plots import png_figure
from agents.random_search import masked_uniform
from mnms_env import BatchedEvaluator, ChildConfig, ChildRequest, SequentialEvaluator
from mnms_env.child import (
    PRECISION_DTYPES,
    PRECISIONS,
    compute_precision,
    device_name,
    resolve_device,
)
from mnms_env.tasks import Split, Task, make_task, register_task

DENSE_TASK = "bench-dense-sst2-size"
CHILD = dict(hidden_layers=2, width=128, activation="relu", optimizer="adam", batch_size=64)
WORKLOADS = {
    "dense": (DENSE_TASK, ChildConfig(representation="raw", representation_size=0, **CHILD)),
    "hashed-text": (
        "langid-es",
        ChildConfig(representation="char-hash", representation_size=4096, **CHILD),
    ),
}


@dataclass(frozen=True)
class Row:
    workload: str
    precision: str
    k: int
    batched_children_per_s: float
    sequential_children_per_s: float
    speedup: float
    mean_val_accuracy: float
    batched_samples: tuple[float, ...]
    sequential_samples: tuple[float, ...]


@dataclass(frozen=True)
class BareLoop:
    """`bare_loop_rate` on the dense workload at the largest K, against the sequential rate."""

    precision: str
    k: int
    children_per_s: float
    speedup: float
    samples: tuple[float, ...]


def _dense_task(seed: int) -> Task:
    """A two-class Gaussian mixture with SST-2's split sizes and MiniLM's 384 dimensions."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=384).astype(np.float32) / np.sqrt(384)

    def split(n: int) -> Split:
        y = rng.integers(2, size=n)
        x = rng.normal(size=(n, 384)).astype(np.float32) + np.outer(2 * y - 1, direction) * 1.5
        return Split(x.astype(np.float32), y)

    return Task(DENSE_TASK, "tabular", ("0", "1"), split(6920), split(872), split(1821), seed)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(evaluator, requests: list[ChildRequest], device: torch.device) -> tuple[float, float]:
    """Children per second and mean validation accuracy of one `evaluate` call."""
    _sync(device)
    start = time.perf_counter()
    results = evaluator.evaluate(requests)
    _sync(device)
    seconds = time.perf_counter() - start
    return len(requests) / seconds, float(np.mean([r.val_accuracy for r in results]))


def profile_table(evaluator, requests: list[ChildRequest], device: torch.device) -> str:
    """torch.profiler's table of the ops that took the most time (device time on a GPU) in one
    `evaluate` call: where a batched step's time goes, to decide what to make faster next."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        _rate(evaluator, requests, device)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=20)


def bare_loop_rate(task: Task, k: int, epochs: int, precision: str) -> float:
    """Children per second of the least any stacked trainer does on the dense workload: K
    2x128 ReLU children's forward, backward and fused Adam step, with none of the evaluator's
    work (no evaluation, per-child options, masks, divergence checks or best-epoch tracking).

    On a CPU the batched step is bound by arithmetic and memory, not by launches, so this rate
    is roughly the ceiling for `BatchedEvaluator` there, and `bare / sequential` for its
    speed-up on this machine."""
    x = torch.from_numpy(task.train.x).to(PRECISION_DTYPES[precision])
    y = torch.from_numpy(task.train.y)
    n, dims = len(y), [x.shape[1], 128, 128, task.num_classes]
    generator = torch.Generator().manual_seed(0)
    weights = [
        0.05 * torch.randn(k, i, o, generator=generator) for i, o in itertools.pairwise(dims)
    ]
    biases = [torch.zeros(k, 1, o) for o in dims[1:]]
    params = [p.requires_grad_() for p in weights + biases]
    optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.stack([torch.randperm(n, generator=generator) for _ in range(k)])
        for begin in range(0, n, 64):
            rows = order[:, begin : begin + 64]
            z = x.index_select(0, rows.reshape(-1)).view(k, rows.shape[1], -1)
            with compute_precision(torch.device("cpu"), precision):
                for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
                    z = torch.baddbmm(b, z if i == 0 else torch.relu(z), w)
            loss = torch.nn.functional.cross_entropy(z.float().flatten(0, 1), y[rows].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return k / (time.perf_counter() - start)


def env_steps_per_second(episodes: int = 2000) -> dict[str, float]:
    """Non-terminal `step` calls per second, on the raw env and through `gym.make`'s wrappers."""
    import gymnasium as gym

    out = {}
    for label, env in (
        ("unwrapped", gym.make("mnms_env:MNMS-v2", task="langid-es", store=None).unwrapped),
        ("gym.make", gym.make("mnms_env:MNMS-v2", task="langid-es", store=None)),
    ):
        env.reset(seed=0)
        actions = [int(np.flatnonzero(m)[0]) for m in env.unwrapped.task_masks()][:-1]
        seconds = 0.0
        for _ in range(episodes):
            env.reset()  # not timed: the rate is of steps
            start = time.perf_counter()
            for action in actions:
                env.step(action)
            seconds += time.perf_counter() - start
        out[label] = episodes * len(actions) / seconds
    return out


def table_episodes_per_second(episodes: int = 2000) -> float:
    """Whole episodes (every decision and the terminal table lookup) per second through
    `gym.make(..., backend="table")`: the cost of one child on the tabular back-end."""
    import gymnasium as gym

    env = gym.make("mnms_env:MNMS-v2", task="digits", backend="table")
    _, info = env.reset(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(episodes):
        terminated = False
        while not terminated:
            action = masked_uniform(info["action_mask"], rng)
            _, _, terminated, _, info = env.step(action)
        _, info = env.reset()
    return episodes / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--ks", type=positive_int, nargs="+", default=None)
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--sequential-children", type=positive_int, default=3)
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=3,
        help="measure every rate this many times, interleaved, and keep the fastest",
    )
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile one 1-epoch batched call of the dense workload at the largest K",
    )
    parser.add_argument(
        "--matmul-precision",
        choices=["highest", "high"],
        default="highest",
        help="torch.set_float32_matmul_precision for both evaluators ('high' allows TF32)",
    )
    args = parser.parse_args(argv)
    distinct(parser, "--ks", args.ks)
    distinct(parser, "--workloads", args.workloads)
    distinct(parser, "--precisions", args.precisions)
    torch.set_float32_matmul_precision(args.matmul_precision)
    device = resolve_device(args.device)
    ks = args.ks or ([1, 8, 32, 256, 1024] if device.type == "cuda" else [1, 8, 32])
    register_task(DENSE_TASK, _dense_task, modality="tabular", overwrite=True)
    name = device_name(device)
    print(
        f"device: {device} ({name}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads, {args.epochs} epochs"
    )

    rows: list[Row] = []
    bare_loops: list[BareLoop] = []
    for workload, precision in itertools.product(args.workloads, args.precisions):
        sequential = SequentialEvaluator(device=device, precision=precision)
        batched = BatchedEvaluator(device=device, precision=precision)
        task, config = WORKLOADS[workload]
        data = make_task(task)
        warm = [ChildRequest.for_task(data, config, seed=10_000, budget=1)]
        sequential.evaluate(warm), batched.evaluate(warm)  # features, CUDA context, kernels
        requests = [
            ChildRequest.for_task(data, config, seed=s, budget=args.epochs)
            for s in range(max(*ks, args.sequential_children))
        ]
        seq_samples, samples, bare_samples = [], {k: [] for k in ks}, []
        bare_task = data if device.type == "cpu" and workload == "dense" else None
        for _ in range(args.repeats):  # interleaved, so a slow spell hits both sides alike
            seq_samples.append(_rate(sequential, requests[: args.sequential_children], device)[0])
            for k in ks:
                samples[k].append(_rate(batched, requests[:k], device))
            if bare_task is not None:
                bare_samples.append(bare_loop_rate(bare_task, max(ks), args.epochs, precision))
        seq_rate = max(seq_samples)
        if bare_task is not None:
            rate = max(bare_samples)
            bare_loops.append(
                BareLoop(precision, max(ks), rate, rate / seq_rate, tuple(bare_samples))
            )
            print(
                f"bare stacked loop {precision} K={max(ks)}: {rate:.2f} children/s, "
                f"x{rate / seq_rate:.1f} the sequential rate (no evaluation or per-child options)"
            )
        for k in ks:
            rate, acc = max(samples[k])
            rates = tuple(r for r, _ in samples[k])
            row = Row(
                workload,
                precision,
                k,
                rate,
                seq_rate,
                rate / seq_rate,
                acc,
                rates,
                tuple(seq_samples),
            )
            rows.append(row)
            print(
                f"{workload:12s} {precision} K={k:5d}  batched {rate:9.2f} children/s  "
                f"sequential {seq_rate:7.3f} children/s  x{rate / seq_rate:8.1f}  "
                f"(mean val acc {acc:.3f})"
            )
        if args.profile and workload == "dense":
            short = [ChildRequest.for_task(data, config, seed=s, budget=1) for s in range(max(ks))]
            table = profile_table(batched, short, device)
            path = args.out / f"profile-{device.type}-{precision}-k{max(ks)}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(table)
            print(f"profile of one epoch at K={max(ks)} ({precision}):\n{table}")
    steps = env_steps_per_second()
    print("env non-terminal steps/s: " + ", ".join(f"{k} {v:,.0f}" for k, v in steps.items()))
    table_rate = table_episodes_per_second()
    print(f"table back-end: {table_rate:,.0f} whole episodes (children) per second")

    report = {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "epochs": args.epochs,
        "matmul_precision": args.matmul_precision,
        "date": time.strftime("%Y-%m-%d"),
        "rows": [asdict(r) for r in rows],
        "bare_loop": [asdict(b) for b in bare_loops],
        "env_steps_per_second": steps,
        "table_episodes_per_second": table_rate,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.matmul_precision == "highest" else f"-{args.matmul_precision}"
    stem = args.out / f"throughput-{device.type}{suffix}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    _plot(rows, f"{name} ({args.epochs} epochs)", stem.with_suffix(".png"))
    print(f"wrote {stem}.json and {stem}.png")
    return report


def _plot(rows: list[Row], title: str, path: Path) -> None:
    with png_figure(path, figsize=(6, 4)) as (fig, ax):
        for line in dict.fromkeys((r.workload, r.precision) for r in rows):
            mine = [r for r in rows if (r.workload, r.precision) == line]
            label = " ".join(line)
            ax.plot(
                [r.k for r in mine],
                [r.batched_children_per_s for r in mine],
                "o-",
                label=f"{label}: batched",
            )
            ax.axhline(
                mine[0].sequential_children_per_s,
                ls="--",
                color=ax.lines[-1].get_color(),
                label=f"{label}: sequential",
            )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="children trained together (K)",
            ylabel="children / second",
            title=title,
        )
        ax.legend(fontsize=8)


if __name__ == "__main__":
    main()
