"""Extending the search space at run time: one registration makes a new activation, optimizer or
featurizer searchable, trained alike by the sequential and the batched evaluator; bad or
duplicate registrations are refused by name."""

import gymnasium as gym
import numpy as np
import pytest
import test_batched
import torch
import torch.nn.functional as F
from sklearn.feature_extraction.text import HashingVectorizer

from mnms_env import (
    BatchedEvaluator,
    Child,
    ChildConfig,
    ChildRequest,
    Decision,
    Featurizer,
    Optimizer,
    SearchSpace,
    SequentialEvaluator,
    VectorRule,
    benchmark_space,
    default_space,
    featurize,
    make_task,
    register_activation,
    register_featurizer,
    register_optimizer,
)
from mnms_env.activations import ACTIVATIONS
from mnms_env.features import FEATURIZERS
from mnms_env.space import SpaceError
from mnms_env.stacked_optim import OPTIMIZERS
from mnms_env.tasks.base import SPLITS

ADAMAX_BETAS = (0.9, 0.999)


def _adamax(p, g, lr, training, state, step) -> None:
    """torch.optim.Adamax's rule: a stopped child's first moment is zeroed, so its update is."""
    m, u = state
    m.lerp_(g, 1 - ADAMAX_BETAS[0]).masked_fill_(~training, 0.0)
    torch.maximum(u.mul_(ADAMAX_BETAS[1]), g.abs().add_(1e-8), out=u)
    p.sub_(lr / (1 - ADAMAX_BETAS[0] ** step) * m / u)


ADAMAX = Optimizer(
    reference=lambda params, lr, l2: torch.optim.Adamax(params, lr=lr, weight_decay=l2),
    stacked=VectorRule(_adamax, state=2),
)


def _char_counts(task, size: int) -> dict:
    """Character 1-3-gram counts hashed into a fixed 64 buckets: a bag without a size."""
    vectorizer = HashingVectorizer(
        analyzer="char_wb", ngram_range=(1, 3), n_features=64, alternate_sign=False, norm=None
    )
    return {name: vectorizer.transform(task.split(name).x).astype(np.float32) for name in SPLITS}


def _raw64(task, size: int) -> dict:
    """Raw tabular features as float64, which the trainers do not read."""
    return {name: task.split(name).x.astype(np.float64) for name in SPLITS}


@pytest.fixture
def softsign():
    register_activation("softsign", F.softsign)
    yield "softsign"
    del ACTIVATIONS["softsign"]


@pytest.fixture
def adamax():
    register_optimizer("adamax", ADAMAX)
    yield "adamax"
    del OPTIMIZERS["adamax"]


@pytest.fixture
def char_counts():
    register_featurizer(
        "char-count", Featurizer("text", bag=True, sized=False, compute=_char_counts)
    )
    yield "char-count"
    del FEATURIZERS["char-count"]


def _episode(task: str, space: SearchSpace, name: str, option: str) -> dict:
    """One `MNMS-v2` episode with the sequential evaluator, choosing `option` for decision `name`
    (the first valid option elsewhere); the batched evaluator then trains the same child."""
    env = gym.make(
        "mnms_env:MNMS-v2",
        task=task,
        space=space,
        budget=1,
        store=None,
        evaluator=SequentialEvaluator(device="cpu"),
    )
    _, info = env.reset(seed=0)
    for decision in space.decisions:
        valid = np.flatnonzero(info["action_mask"])
        action = decision.options.index(option) if decision.name == name else int(valid[0])
        assert action in valid
        _, reward, terminated, _, info = env.step(action)
    child = info["child"]
    assert terminated and child["config"][name] == option
    assert child["best_epoch"] == 1 and child["seconds"] > 0 and not child["diverged"]
    request = Child.from_info(child).request
    (batched,) = BatchedEvaluator(device="cpu").evaluate([request])
    one_example = 1 / len(make_task(task).validation)
    assert batched.val_accuracy == pytest.approx(reward, abs=one_example)
    assert batched.parameters == child["parameters"]
    return child


def _tiny_space(*decisions: Decision) -> SearchSpace:
    return SearchSpace(
        (
            Decision("hidden_layers", (1,)),
            Decision("width", (16,)),
            *decisions,
            Decision("learning_rate", (0.01,)),
            Decision("batch_size", (16,)),
        )
    )


def test_a_registered_activation_is_searchable_in_both_trainers(softsign) -> None:
    assert ChildConfig(activation=softsign).activation == softsign
    space = _tiny_space(Decision("activation", ("relu", softsign)))
    child = _episode("wine", space, "activation", softsign)
    assert child["val_accuracy"] > 0.5  # three classes: it learned in one epoch


def test_an_option_registered_at_run_time_is_named_by_a_worker_that_lacks_it(
    softsign, char_counts
) -> None:
    """A spawned worker imports the script afresh, not this test: it failed with a KeyError
    (an activation) or as if the user had not registered it (a featurizer)."""
    evaluator = BatchedEvaluator(device="cpu", workers=1)
    try:
        for task, config, named in [
            ("wine", ChildConfig("raw", 0, activation=softsign), "activation='softsign'"),
            ("langid-es", ChildConfig(char_counts, 0), "representation='char-count'"),
        ]:
            with pytest.raises(ValueError, match=f"{named} is not registered in the worker"):
                evaluator.evaluate([ChildRequest.for_task(task, config)])
    finally:
        evaluator.close()


def test_a_registered_optimizer_is_searchable_in_both_trainers(adamax) -> None:
    assert Decision("optimizer", ("adam", adamax)).options == ("adam", adamax)
    space = _tiny_space(Decision("optimizer", ("adam", adamax)))
    child = _episode("wine", space, "optimizer", adamax)
    assert child["val_accuracy"] > 0.5


def test_a_registered_vector_rule_follows_its_torch_counterpart(adamax) -> None:
    """The check of the built-in rules, on the registered one: per-child learning rate and L2,
    a stopped child keeps its weights, an infinite gradient diverges as it would alone."""
    test_batched.test_stacked_optimizers_step_each_child_as_torch_would((adamax, "vectorised"))


def test_a_registered_featurizer_is_searchable_in_both_trainers(char_counts) -> None:
    features = featurize(make_task("word-sentiment-da"), char_counts)
    assert features.is_bag and features.dim == 64
    with pytest.raises(SpaceError, match="'char-count' has no size"):
        ChildConfig(representation=char_counts, representation_size=4096)
    space = _tiny_space(Decision("representation", ("char-hash", char_counts, "raw")))
    reps = space.decisions[2].options
    assert space.masks("text")[2, : len(reps)].tolist() == [True, True, False]
    assert space.masks("tabular")[2, : len(reps)].tolist() == [False, False, True]
    child = _episode("word-sentiment-da", space, "representation", char_counts)
    assert child["config"]["representation_size"] == 0


def test_a_featurizer_whose_minimum_is_above_the_default_size_can_be_offered() -> None:
    """A space without a size decision gives it its minimum, not the default 4096."""
    big = Featurizer("text", bag=True, sized=True, compute=_char_counts, min_size=5000)
    register_featurizer("big-hash", big)
    try:
        space = SearchSpace((Decision("representation", ("word-hash", "big-hash")),))
        sizes = [space.decode([i], "text").representation_size for i in (0, 1)]
        assert sizes == [4096, 5000]
    finally:
        del FEATURIZERS["big-hash"]


def test_registered_options_stay_out_of_the_default_spaces(softsign, adamax, char_counts) -> None:
    for space in (default_space(), benchmark_space()):
        options = {option for d in space.decisions for option in d.options}
        assert not {softsign, adamax, char_counts} & options


def test_masks_follow_a_featurizer_registered_again() -> None:
    """The masks cache cannot answer for a name's old entry."""
    register_featurizer("swap", Featurizer("text", bag=True, sized=False, compute=_char_counts))
    try:
        space = SearchSpace((Decision("representation", ("raw", "word-hash", "swap")),))
        assert space.masks("text")[0].tolist() == [False, True, True]
        del FEATURIZERS["swap"]
        tabular = Featurizer("tabular", bag=False, sized=False, compute=_char_counts)
        register_featurizer("swap", tabular)
        assert space.masks("text")[0].tolist() == [False, True, False]
        assert space.masks("tabular")[0].tolist() == [True, False, True]
    finally:
        FEATURIZERS.pop("swap", None)


def test_unknown_names_list_the_registered_ones(softsign, adamax, char_counts) -> None:
    with pytest.raises(SpaceError, match=r"activation='softsine' is not registered.*'softsign'"):
        ChildConfig(activation="softsine")
    with pytest.raises(SpaceError, match=r"'sgd', 'adagrad', 'rmsprop', 'adamax'\]"):
        Decision("optimizer", ("lbfgs",))
    with pytest.raises(
        ValueError, match=r"'char-cont' is not registered.*Did you mean 'char-count'"
    ):
        featurize(make_task("wine"), "char-cont")


def test_a_duplicate_registration_is_refused(softsign) -> None:
    with pytest.raises(ValueError, match="activation 'softsign' is already registered"):
        register_activation(softsign, torch.tanh)
    with pytest.raises(ValueError, match="optimizer 'adam' is already registered"):
        register_optimizer("adam", ADAMAX)
    with pytest.raises(ValueError, match="representation 'raw' is already registered"):
        register_featurizer("raw", Featurizer("tabular", bag=False, sized=False, compute=_raw64))
    assert ACTIVATIONS[softsign] is F.softsign and OPTIMIZERS["adam"] is not ADAMAX


@pytest.mark.parametrize(
    ("register", "message"),
    [
        (lambda: register_activation("sum", torch.sum), r"same dtype and shape; got .*\(\)\)"),
        (lambda: register_activation("sum", torch.tanh_), "'sum' changed its input: it must not"),
        (
            lambda: register_activation("sum", lambda x: torch.softmax(x, -1)),
            "'sum' is not element by element",
        ),
        (
            lambda: register_activation("sum", lambda x: x.double()),
            r"same dtype and shape; got \(torch.float64, \(2, 2, 3\)\)",
        ),
        (lambda: register_activation("has space", torch.tanh), "'has space' is not usable"),
        (lambda: register_optimizer("plain", torch.optim.SGD), "expected an Optimizer"),
        (lambda: Optimizer(reference=torch.optim.SGD, stacked=3), "VectorRule or a callable"),
        (lambda: VectorRule(_adamax, state=-1), "number of tensors >= 0, got -1"),
        (lambda: Featurizer("image", bag=True, sized=True, compute=_raw64), "'image'; accepted"),
    ],
    ids=[
        "activation-shape",
        "in-place",
        "mixing",
        "float64",
        "name",
        "optimizer-kind",
        "stacked-form",
        "state",
        "modality",
    ],
)
def test_a_bad_entry_is_refused_by_name(register, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        register()
    assert "sum" not in ACTIVATIONS and "plain" not in OPTIMIZERS


def test_a_featurizer_computing_the_wrong_matrices_is_refused() -> None:
    register_featurizer("raw64", Featurizer("tabular", bag=False, sized=False, compute=_raw64))
    try:
        with pytest.raises(ValueError, match="'raw64': split 'train' must be a 2-D numpy array"):
            featurize(make_task("wine"), "raw64")
    finally:
        del FEATURIZERS["raw64"]
