import numpy as np
import pytest

from agents.metrics import area_under_curve, best_so_far, children_to_reach, speedup
from agents.runner import History
from mnms_env import Child, ChildConfig, ChildRequest, ChildResult


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
