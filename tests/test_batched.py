"""The batched evaluator against the sequential reference, on real tasks and the default space."""

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mnms_env import ChildConfig, ChildRequest, SequentialEvaluator, batched, default_space
from mnms_env.activations import ACTIVATIONS
from mnms_env.batched import BatchedEvaluator, batch_group
from mnms_env.child import make_optimizer
from mnms_env.stacked_optim import (
    ADAM_KERNEL,
    FusedOptimizer,
    VectorOptimizer,
    stacked_optimizer,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from agreement import agreement, random_requests  # noqa: E402


def assert_agree(requests: list, sequential: list, batched: list) -> None:
    """Mean |diff| at most 1.5 points, signed mean within +-0.5 points (issue 4's bar)."""
    measured = agreement("", requests, sequential, batched)
    assert measured.mean_abs_diff <= 1.5 and abs(measured.signed_mean_diff) <= 0.5, measured
    assert [s.parameters for s in sequential] == [b.parameters for b in batched]


@pytest.fixture(scope="module")
def reference() -> tuple[list, list]:
    """60 random default-space configs on two tasks, trained by the float32 sequential
    reference. The draw is seed 1: a chaotic child (RMSprop at lr 0.03 with dropout, whose masks
    the batched evaluator draws from its own generator) can end 25 points apart on its own and
    move the signed mean of 60 configs by 0.4 points, and draw 0 holds one (signed mean -0.46
    in fp32 and +0.37 in bf16 when measured). `benchmarks/agreement.py` measures 200 configs
    (see the README)."""
    requests = random_requests(["digits", "word-sentiment-da"], per_task=30, seed=1)
    return requests, SequentialEvaluator(device="cpu").evaluate(requests)


def test_batched_matches_sequential_on_random_configs(reference) -> None:
    requests, sequential = reference
    batched = BatchedEvaluator(device="cpu").evaluate(requests)
    assert_agree(requests, sequential, batched)
    assert all(b.device == "cpu" and b.seconds > 0 for b in batched)


def test_bf16_batched_matches_the_fp32_reference(reference) -> None:
    requests, sequential = reference
    batched = BatchedEvaluator(device="cpu", precision="bf16").evaluate(requests)
    assert_agree(requests, sequential, batched)
    assert {b.device for b in batched} == {"cpu bf16"}


@pytest.mark.parametrize("workers", [0, 2])
def test_cnn_children_train_in_the_batched_evaluator_exactly_as_alone(phrases, workers) -> None:
    """Random default-space CNN children among MLP children: the batched evaluator (in this
    process, or in worker processes) trains each CNN alone with `train_child`, so it reports
    exactly what the sequential reference does, and stacks the MLPs as before."""
    cnns = random_requests(
        [phrases],
        per_task=6,
        seed=0,
        budget=2,
        space=default_space().with_options("representation", ["tokens"]),
    )
    mlp = ChildRequest.for_task(phrases, ChildConfig(representation="char-hash"), budget=2)
    requests = [cnns[0], mlp, *cnns[1:]]
    assert all(r.config.is_cnn for r in cnns) and not mlp.config.is_cnn
    tasks = {"phrases": phrases}.__getitem__
    sequential = SequentialEvaluator(device="cpu", tasks=tasks).evaluate(requests)
    assert len({s.val_accuracy for s in sequential}) > 2  # children that learned, and differ
    evaluator = BatchedEvaluator(device="cpu", workers=workers, tasks=tasks)
    try:
        together = evaluator.evaluate(requests)
    finally:
        evaluator.close()
    for request, s, b in zip(requests, sequential, together, strict=True):
        if request.config.is_cnn:
            assert (s.val_accuracy, s.test_accuracy, s.best_epoch) == (
                b.val_accuracy,
                b.test_accuracy,
                b.best_epoch,
            ), request.config.describe()
        else:
            assert b.val_accuracy == pytest.approx(s.val_accuracy, abs=1 / 24)
        assert (s.parameters, s.diverged, b.device) == (b.parameters, b.diverged, "cpu")


@pytest.mark.parametrize("evaluator", [SequentialEvaluator, BatchedEvaluator])
def test_an_unknown_precision_is_refused_by_name(evaluator) -> None:
    with pytest.raises(ValueError, match=r"'fp16'.*\('fp32', 'bf16'\)|\('fp32', 'bf16'\).*'fp16'"):
        evaluator(device="cpu", precision="fp16")


def _config(**kw) -> ChildConfig:
    base = dict(representation="raw", representation_size=0, hidden_layers=2, width=32)
    return ChildConfig(**(base | kw))


def test_a_diverged_child_does_not_disturb_the_others() -> None:
    """The wild child shares the others' stacked model (same optimizer and depth)."""
    calm = [
        ChildRequest.for_task(
            "digits", _config(optimizer="sgd", learning_rate=lr), seed=s, budget=2
        )
        for s, lr in enumerate([1e-2, 3e-2, 1e-1])
    ]
    wild = ChildRequest.for_task(
        "digits", _config(optimizer="sgd", learning_rate=1e4, width=256), seed=9, budget=2
    )
    together = BatchedEvaluator(device="cpu").evaluate([*calm[:2], wild, calm[2]])
    alone = BatchedEvaluator(device="cpu").evaluate(calm)
    assert together[2].diverged and not any(r.diverged for r in alone)
    for a, b in zip([together[0], together[1], together[3]], alone, strict=True):
        assert a.val_accuracy == pytest.approx(b.val_accuracy, abs=1 / 180)
        assert a.best_epoch == b.best_epoch


def test_a_nan_activation_stays_with_its_own_child(monkeypatch) -> None:
    """Activations were mixed as `out + chosen * act(z)`: 0 * NaN made a healthy child NaN."""
    monkeypatch.setitem(ACTIVATIONS, "log1p", torch.log1p)  # NaN below -1

    def request(activation: str) -> ChildRequest:
        config = ChildConfig(
            representation="raw", representation_size=0, activation=activation, batch_size=16
        )
        return ChildRequest.for_task("wine", config, budget=2)

    together = BatchedEvaluator(device="cpu").evaluate([request("relu"), request("log1p")])
    (alone,) = BatchedEvaluator(device="cpu").evaluate([request("relu")])
    assert together[1].diverged and not alone.diverged
    assert (together[0].val_accuracy, together[0].diverged) == (alone.val_accuracy, False)


def test_an_activation_overflowing_at_a_neighbour_s_inputs_leaves_it_alone(monkeypatch) -> None:
    """Every activation ran on every child's inputs: a softplus written out, log(1 + e^x),
    overflows at a relu child's large ones, and its backward made that child's gradient NaN."""
    monkeypatch.setitem(ACTIVATIONS, "softplus", lambda x: torch.log1p(torch.exp(x)))

    def request(activation: str, learning_rate: float) -> ChildRequest:
        config = _config(
            hidden_layers=2,
            width=32,
            activation=activation,
            optimizer="sgd",
            learning_rate=learning_rate,
            batch_size=32,
        )
        return ChildRequest.for_task("digits", config, seed=0, budget=2)

    relu = request("relu", 0.3)
    together = BatchedEvaluator(device="cpu").evaluate([relu, request("softplus", 1e-2)])
    (alone,) = BatchedEvaluator(device="cpu").evaluate([relu])
    assert not alone.diverged
    assert (together[0].val_accuracy, together[0].diverged) == (alone.val_accuracy, False)


def test_oversized_request_lists_are_split_not_crashed() -> None:
    requests = [
        ChildRequest.for_task("digits", _config(width=w), seed=w, budget=1) for w in (8, 16, 24)
    ]
    whole = BatchedEvaluator(device="cpu").evaluate(requests)
    one_by_one = BatchedEvaluator(device="cpu", memory_limit=1).evaluate(requests)
    for a, b in zip(whole, one_by_one, strict=True):
        assert a.val_accuracy == pytest.approx(b.val_accuracy, abs=1 / 180)


def test_each_optimizer_follows_its_torch_counterpart() -> None:
    """Dropout off, one child: the batched run is the sequential run up to float rounding,
    down to the best epoch and the test accuracy reported for it."""
    for optimizer, lr in [("adam", 3e-3), ("sgd", 0.03), ("adagrad", 0.03), ("rmsprop", 1e-3)]:
        config = _config(optimizer=optimizer, learning_rate=lr, l2=1e-4)
        request = ChildRequest.for_task("digits", config, budget=4)
        (s,) = SequentialEvaluator(device="cpu").evaluate([request])
        (b,) = BatchedEvaluator(device="cpu").evaluate([request])
        assert b.val_accuracy == pytest.approx(s.val_accuracy, abs=1 / 180), optimizer
        assert b.test_accuracy == pytest.approx(s.test_accuracy, abs=1 / 180), optimizer
        assert b.best_epoch == s.best_epoch, optimizer


def test_the_gpu_adam_trains_as_the_cpu_adam(monkeypatch) -> None:
    """CUDA's Adam (every child passed to the fused kernel, stopped children masked on the
    device, L2 added outside the kernel) against the CPU's (only training children passed), in
    real training where children stop at different epochs; run here, where no GPU is."""
    rates = [(3e-3, 0.0, 1), (3e-3, 1e-2, 3), (3e-3, 0.0, 2), (1e-2, 0.0, 3)]
    requests = [
        ChildRequest.for_task("digits", _config(learning_rate=lr, l2=l2), seed=s, budget=b)
        for s, (lr, l2, b) in enumerate(rates)
    ]
    sliced = BatchedEvaluator(device="cpu").evaluate(requests)
    monkeypatch.setattr(
        batched,
        "stacked_optimizer",
        lambda params, configs, dev: FusedOptimizer(
            ADAM_KERNEL, params, configs, masks_on_device=True
        ),
    )
    masked = BatchedEvaluator(device="cpu").evaluate(requests)
    for a, b in zip(sliced, masked, strict=True):
        assert a.val_accuracy == pytest.approx(b.val_accuracy, abs=1 / 180)
        assert a.test_accuracy == pytest.approx(b.test_accuracy, abs=1 / 180)
        assert a.best_epoch == b.best_epoch


MIXED = ("adagrad", "sgd", "adam", "adam", "rmsprop")
"""Optimizers of the five children of the `mixed` case: four runs of one stack."""


@pytest.mark.parametrize(
    "rule",
    [("adam", "fused"), ("adam", "fused-masked"), ("mixed", "fused")]
    + [(kind, form) for kind in ("sgd", "adagrad", "rmsprop") for form in ("vectorised", "fused")],
    ids="-".join,
)
def test_stacked_optimizers_step_each_child_as_torch_would(rule: tuple[str, str]) -> None:
    """The update rules on stacked weights, against one `torch.optim` optimizer per child: own
    learning rate and L2 per child, and a child that stops keeps its weights although its
    gradient is NaN from then on (its masked loss can still give 0 * NaN upstream). `fused` is
    what the CPU runs (torch's fused kernels over the training children's slices), the masked
    fused Adam and the vectorised rules are what CUDA runs, so this checks them where no GPU
    is; `mixed` gives the children different optimizers in one stack. Children 0, 2 and 3 share
    their rates, and 2 stops inside that run of the fused kernel's slices. Child 4 gets an
    infinite gradient in its last step: its weights go non-finite as they would alone (so it
    diverges when the reference would) and then stay as they are, and no other child notices."""
    kind, implementation = rule
    torch.manual_seed(0)
    kinds = MIXED if kind == "mixed" else (kind,) * 5
    configs = [
        _config(optimizer=k, learning_rate=lr, l2=l2)
        for k, (lr, l2) in zip(
            kinds, [(1e-3, 0.0), (1e-2, 1e-2), (1e-3, 0.0), (1e-3, 0.0), (3e-3, 0.0)], strict=True
        )
    ]
    initial = [torch.randn(5, 5, 4), torch.randn(5, 4)]
    steps = [[torch.randn_like(p) for p in initial] for _ in range(4)]
    stops_after = [4, 4, 2, 4, 3]
    steps[2][0][4, 0, 0] = torch.inf  # in child 4's last step: its next loss is not finite

    stacked = [p.clone().requires_grad_() for p in initial]
    if implementation == "vectorised":
        optimizer = VectorOptimizer(kind, stacked, configs, torch.device("cpu"))
    elif implementation == "fused-masked":
        optimizer = FusedOptimizer(ADAM_KERNEL, stacked, configs, masks_on_device=True)
    else:
        optimizer = stacked_optimizer(stacked, configs, torch.device("cpu"))
        assert not isinstance(optimizer, VectorOptimizer)
    for t, grads in enumerate(steps):
        training = torch.tensor([t < n for n in stops_after])
        for p, g in zip(stacked, grads, strict=True):
            p.grad = torch.where(training.view(-1, *[1] * (g.dim() - 1)), g, torch.nan)
        optimizer.step(training)

    for k, config in enumerate(configs):
        alone = [p[k].clone().requires_grad_() for p in initial]
        reference = make_optimizer(config, alone)
        for grads in steps[: stops_after[k]]:
            for p, g in zip(alone, grads, strict=True):
                p.grad = g[k].clone()
            reference.step()
        for p, q in zip(stacked, alone, strict=True):
            torch.testing.assert_close(
                p[k].detach(), q.detach(), rtol=1e-5, atol=1e-6, equal_nan=True
            )
    assert not stacked[0][4].isfinite().all() and stacked[0][:4].isfinite().all()


def test_children_of_every_optimizer_share_one_stack_and_train_as_alone() -> None:
    """One group for four optimizers (each updates its own slice of the stack); without dropout
    each child ends as it does in a stack of its own, down to the best epoch."""
    requests = [
        ChildRequest.for_task(
            "digits", _config(optimizer=kind, learning_rate=lr, width=w), seed=s, budget=2
        )
        for s, (kind, lr, w) in enumerate(
            [("rmsprop", 1e-3, 16), ("adam", 3e-3, 32), ("sgd", 3e-2, 32), ("adagrad", 3e-2, 8)]
        )
    ]
    assert len({batch_group(r) for r in requests}) == 1
    together = BatchedEvaluator(device="cpu").evaluate(requests)
    for request, shared in zip(requests, together, strict=True):
        (alone,) = BatchedEvaluator(device="cpu").evaluate([request])
        assert shared.val_accuracy == pytest.approx(alone.val_accuracy, abs=1 / 180), request
        assert shared.test_accuracy == pytest.approx(alone.test_accuracy, abs=1 / 180), request
        assert shared.best_epoch == alone.best_epoch, request


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": -1}, r"workers must be an int >= 0 \(0: train in this process\), got -1"),
        ({"workers": True}, r"workers must be an int >= 0 .*, got True"),
        ({"workers": 2, "device": "meta"}, r"workers=2 trains in CPU processes, but device='meta'"),
        ({"memory_limit": "1GB"}, r"memory_limit is bytes, an int >= 1 .*, got '1GB'"),
    ],
)
def test_bad_workers_and_memory_limits_are_refused_by_name(
    kwargs: dict, message: str, monkeypatch
) -> None:
    monkeypatch.setattr(batched, "resolve_device", torch.device)  # as if 'meta' could train
    with pytest.raises(ValueError, match=message):
        BatchedEvaluator(**{"device": "cpu", **kwargs})


def test_bag_steps_gathered_in_runs_equal_each_step_gathered_alone(monkeypatch) -> None:
    """A training epoch's bags, gathered a run of steps at a time (two steps per run here, and
    a last partial step), are exactly the bags each step gathers on its own; rows without
    entries included."""
    monkeypatch.setattr(batched._Inputs, "BAG_RUN", 3 * 2 * 4 * 2)  # ~17 entries a step
    rng = np.random.default_rng(0)
    mat = sp.random(30, 7, density=0.3, format="csr", random_state=1, dtype=np.float32)
    inputs = batched._Inputs(mat, rng.integers(0, 2, 30), torch.device("cpu"), torch.float32)
    order = torch.stack(
        [torch.randperm(30, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    )
    steps = list(inputs.steps(order, 4))
    assert len(steps) == 8 and steps[-1][0].shape == (2, 2)
    for begin, (rows, bags) in zip(range(0, 30, 4), steps, strict=True):
        assert torch.equal(rows, order[:, begin : begin + 4])
        alone = inputs.gather(rows, 2)
        assert bags.shape == alone.shape
        for field in ("index", "weight", "offsets", "bag"):
            assert torch.equal(getattr(bags, field), getattr(alone, field)), field
