import numpy as np
import pytest

from agents.metrics import (
    area_under_curve,
    average_ranks,
    best_so_far,
    children_to_reach,
    incumbent_regret,
    speedup,
)
from agents.runner import History
from mnms_env import (
    Child,
    ChildConfig,
    ChildRequest,
    ChildResult,
    Table,
    TaskCard,
    benchmark_space,
)


def history(rewards: list[tuple[str, float]]) -> History:
    children = tuple(
        Child(
            ChildRequest(task, ChildConfig(), fingerprint="fp"),
            ChildResult(val, val - 0.01, 1.0, 1, "cpu", False, 1),
        )
        for task, val in rewards
    )
    return History("hand-made", ("a", "b"), 3, 0, 1, children, 1.0)


RUN = history([("a", 0.5), ("b", 0.9), ("a", 0.7), ("b", 0.8), ("a", 0.6), ("b", 0.95)])


def test_best_so_far_is_per_task_and_monotone() -> None:
    np.testing.assert_allclose(best_so_far(RUN, "a"), [0.5, 0.7, 0.7])
    np.testing.assert_allclose(best_so_far(RUN, "b"), [0.9, 0.9, 0.95])
    with pytest.raises(ValueError, match="no child for task 'c'"):
        best_so_far(RUN, "c")


def test_area_under_curve_rewards_finding_the_best_early() -> None:
    early, late = np.array([0.9, 0.9, 0.9]), np.array([0.5, 0.5, 0.9])
    assert area_under_curve(early) == pytest.approx(0.9)
    assert area_under_curve(late) == pytest.approx(1.9 / 3)  # the same final best, found late
    assert area_under_curve(best_so_far(RUN, "a")) == pytest.approx((0.5 + 0.7 + 0.7) / 3)


def test_children_to_reach_a_threshold() -> None:
    curve = best_so_far(RUN, "a")
    assert children_to_reach(curve, 0.7) == 2
    assert children_to_reach(curve, 0.95 * 0.7) == 2
    assert children_to_reach(curve, 0.5) == 1
    assert children_to_reach(curve, 0.71) is None


def test_speedup_against_a_from_scratch_reference() -> None:
    scratch = np.array([0.5, 0.6, 0.6, 0.7, 0.8])  # reaches its final 0.8 at child 5
    transferred = np.array([0.7, 0.85, 0.85])  # reaches 0.8 at child 2
    assert speedup(scratch, transferred) == pytest.approx(2.5)
    assert speedup(scratch, np.array([0.1, 0.2])) is None


def _table(quality: dict[ChildConfig, float]) -> Table:
    """A hand-made table whose two seeds average to each config's quality."""
    space, n = benchmark_space(), len(quality)
    val = np.array(list(quality.values()))[:, None] + np.array([[-0.05, 0.05]])
    zeros = np.zeros((n, 2))
    return Table(
        TaskCard("a", "tabular", 2, "fp"), 1, (0, 1), space, tuple(quality), val, zeros, zeros,
        zeros.astype(bool), zeros.astype(int), np.zeros(n, dtype=int), space.masks("tabular"),
    )  # fmt: skip


def _configs(n: int) -> list[ChildConfig]:
    return [ChildConfig(representation="raw", representation_size=0, learning_rate=lr)
            for lr in (1e-3, 1e-2, 1e-1)[:n]]  # fmt: skip


def test_incumbent_regret_measures_the_best_child_so_far_against_the_table() -> None:
    worst, middle, best = _configs(3)
    table = _table({worst: 0.5, middle: 0.7, best: 0.9})
    lucky = 0.78  # a lucky seed of the middle config beats an unlucky seed of the best
    rewards = [(worst, 0.52), (middle, lucky), (best, 0.76), (best, 0.95)]
    children = tuple(
        Child(ChildRequest("a", c, fingerprint="fp"), ChildResult(v, v, 1.0, 1, "t", False, 1))
        for c, v in rewards
    )
    run = History("hand-made", ("a",), 4, 0, 1, children, 1.0)
    # the incumbent is judged by its config's seed mean, not by its lucky reward
    np.testing.assert_allclose(incumbent_regret(run, "a", table), [1.0, 0.5, 0.5, 0.0])
    flat = _table(dict.fromkeys((worst, middle, best), 0.5))  # 0/0 made every rank NaN
    np.testing.assert_array_equal(incumbent_regret(run, "a", flat), [0.0] * 4)


def test_average_ranks_share_ties_and_average_over_problems() -> None:
    regrets = {
        "x": np.array([[0.5, 0.0], [0.2, 0.2]]),  # two problems, two children each
        "y": np.array([[0.5, 0.1], [0.1, 0.1]]),
        "z": np.array([[0.9, 0.2], [0.3, 0.0]]),
    }
    ranks = average_ranks(regrets)
    np.testing.assert_allclose(ranks["x"], [(1.5 + 2) / 2, (1 + 3) / 2])
    np.testing.assert_allclose(ranks["y"], [(1.5 + 1) / 2, (2 + 2) / 2])
    np.testing.assert_allclose(ranks["z"], [(3 + 3) / 2, (3 + 1) / 2])
    total = sum(ranks.values())
    np.testing.assert_allclose(total, [6, 6])  # ranks of three controllers sum to 1+2+3
