"""One contract, every evaluator: what the envs, the cache and the agents rely on of any
`Evaluator`. A new evaluator gets a subclass of `EvaluatorContract` here (the Ray evaluator's is
in `tests/test_ray.py`, beside the cluster it needs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from mnms_env import (
    BatchedEvaluator,
    CachedEvaluator,
    Child,
    ChildConfig,
    ChildRequest,
    Evaluator,
    ResultStore,
    SequentialEvaluator,
    TableEvaluator,
    TaskError,
    load_table,
)

RAW = ChildConfig(representation="raw", representation_size=0, width=16, batch_size=64)
TRAINED = [  # two seeds of one config, a deeper child, another batch size (another group)
    ChildRequest.for_task("wine", RAW, seed=0),
    ChildRequest.for_task("wine", RAW, seed=1),
    ChildRequest.for_task("wine", replace(RAW, hidden_layers=2), seed=0),
    ChildRequest.for_task("wine", replace(RAW, batch_size=32), seed=0, budget=2),
]


def _measured(result) -> tuple:
    """What a result measured; `seconds` aside, which no two runs share."""
    return (result.val_accuracy, result.test_accuracy, result.parameters, result.diverged)


class EvaluatorContract:
    """Subclasses provide the fixtures `evaluator` and `requests` (which it can answer)."""

    def test_stream_answers_every_request_exactly_once(self, evaluator, requests) -> None:
        indices = [i for i, _ in evaluator.stream(requests)]
        assert sorted(indices) == list(range(len(requests)))

    def test_evaluate_is_the_stream_in_request_order(self, evaluator, requests) -> None:
        streamed = dict(evaluator.stream(requests))
        evaluated = evaluator.evaluate(requests)
        assert [_measured(r) for r in evaluated] == [
            _measured(streamed[i]) for i in range(len(requests))
        ]

    def test_results_are_measurements(self, evaluator, requests) -> None:
        for result in evaluator.evaluate(requests):
            assert 0.0 <= result.val_accuracy <= 1.0 and 0.0 <= result.test_accuracy <= 1.0
            assert result.parameters > 0 and result.seconds >= 0 and result.device
            assert isinstance(result.diverged, bool) and result.best_epoch >= 0

    def test_no_requests_get_no_results(self, evaluator) -> None:
        assert list(evaluator.stream([])) == [] and evaluator.evaluate([]) == []

    def test_behind_a_store_each_child_is_answered_once(self, evaluator, requests, tmp_path):
        store = ResultStore(tmp_path / "r.sqlite")
        first = CachedEvaluator(evaluator, store).children(requests)
        again = CachedEvaluator(evaluator, store).children(requests)
        assert not any(child.cached for child in first) and all(c.cached for c in again)
        assert [c.result for c in first] == [c.result for c in again]
        assert len(store) == len(set(requests))


class TestSequentialEvaluator(EvaluatorContract):
    @pytest.fixture
    def evaluator(self) -> Evaluator:
        return SequentialEvaluator(device="cpu")

    @pytest.fixture
    def requests(self) -> list[ChildRequest]:
        return TRAINED


class TestBatchedEvaluator(EvaluatorContract):
    @pytest.fixture
    def evaluator(self) -> Evaluator:
        return BatchedEvaluator(device="cpu")

    @pytest.fixture
    def requests(self) -> list[ChildRequest]:
        return TRAINED


class TestBatchedEvaluatorWorkers(EvaluatorContract):
    """Two spawned workers, started once for the class (the scenario that could hang runs
    under a time limit in `tests/test_clients.py`)."""

    @pytest.fixture(scope="class")
    @classmethod
    def evaluator(cls) -> Iterator[Evaluator]:
        evaluator = BatchedEvaluator(device="cpu", workers=2)
        yield evaluator
        evaluator.close()

    @pytest.fixture
    def requests(self) -> list[ChildRequest]:
        return TRAINED


class TestTableEvaluator(EvaluatorContract):
    @pytest.fixture
    def evaluator(self) -> Evaluator:
        return TableEvaluator.for_tasks(["digits"])

    @pytest.fixture
    def requests(self) -> list[ChildRequest]:
        table = load_table("digits")
        return [
            ChildRequest.for_task("digits", table.configs[i], seed=s, budget=table.budget)
            for i, s in ((0, 0), (0, 1), (7, 2), (250, 0))
        ]


class TestCachedEvaluator(EvaluatorContract):
    """The cache is an evaluator too: it composes with anything that takes one."""

    @pytest.fixture
    def evaluator(self, tmp_path) -> Evaluator:
        return CachedEvaluator(SequentialEvaluator(device="cpu"), ResultStore(tmp_path / "c"))

    @pytest.fixture
    def requests(self) -> list[ChildRequest]:
        return TRAINED


@pytest.mark.parametrize("evaluator_class", [SequentialEvaluator, BatchedEvaluator])
def test_trainers_refuse_a_request_made_for_other_data(evaluator_class) -> None:
    stale = replace(TRAINED[0], fingerprint="0123456789abcdef")
    with pytest.raises(TaskError, match="fingerprint 0123456789abcdef.*make the request again"):
        evaluator_class(device="cpu").evaluate([stale])


@pytest.mark.parametrize("evaluator_class", [SequentialEvaluator, BatchedEvaluator])
def test_trainers_find_tasks_through_the_lookup_they_are_built_with(evaluator_class) -> None:
    """A task the registry does not know, handed to the evaluator by a mapping."""
    from mnms_env import make_task

    mine = replace(make_task("wine"), name="my-wine")
    request = ChildRequest.for_task(mine, RAW)
    (result,) = evaluator_class(device="cpu", tasks={"my-wine": mine}.__getitem__).evaluate(
        [request]
    )
    (reference,) = evaluator_class(device="cpu").evaluate([TRAINED[0]])
    assert 0.0 <= result.val_accuracy <= 1.0 and result.parameters == reference.parameters
    with pytest.raises(TypeError, match="got dict: pass its __getitem__"):  # not at a child
        evaluator_class(device="cpu", tasks={"my-wine": mine})


def test_a_child_reads_back_what_it_writes_and_names_what_is_missing() -> None:
    (child,) = CachedEvaluator(SequentialEvaluator(device="cpu"), None).children(TRAINED[:1])
    info = child.to_info()
    assert Child.from_info(json.loads(json.dumps(info))) == child
    with pytest.raises(ValueError, match=r"lacks \['fingerprint', 'cached'\]"):
        Child.from_info({k: v for k, v in info.items() if k not in ("fingerprint", "cached")})


def test_a_store_given_as_a_path_is_refused_with_how_to_open_it(tmp_path) -> None:
    with pytest.raises(TypeError, match=r"must be a ResultStore or None.*ResultStore\(path\)"):
        CachedEvaluator(SequentialEvaluator(device="cpu"), str(tmp_path / "r.sqlite"))


class Broken(Evaluator):
    """Answers as told: `indices` in order, whatever the requests."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def stream(self, requests):
        result = SequentialEvaluator(device="cpu").evaluate(TRAINED[:1])[0]
        for i in self.indices:
            yield i, result


@pytest.mark.parametrize(
    ("indices", "match"),
    [([0, 0], "index 0 twice"), ([0, 5], r"index 5 outside 0\.\.1"), ([1], "answered 1 of 2")],
)
def test_an_evaluator_that_answers_wrongly_is_named(indices, match) -> None:
    requests = TRAINED[:2]
    with pytest.raises(RuntimeError, match=f"Broken.stream answered .*{match}|{match}"):
        Broken(indices).evaluate(requests)
    with pytest.raises(RuntimeError, match=match):
        CachedEvaluator(Broken(indices), None).children(requests)


def test_an_evaluator_may_answer_with_numpy_indices() -> None:
    """`for i in np.argsort(...)` yields numpy ints; they were refused as out of range."""
    requests = TRAINED[:2]
    indices = list(np.array([1, 0]))
    assert len(Broken(indices).evaluate(requests)) == 2
    children = CachedEvaluator(Broken(indices), None).children(requests)
    assert [c.request for c in children] == list(requests)
    with pytest.raises(RuntimeError, match="index np.int64.0. twice"):
        Broken(list(np.array([0, 0]))).evaluate(requests)
