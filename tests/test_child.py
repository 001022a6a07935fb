import numpy as np
import pytest

from mnms_env.child import ChildNet, resolve_device, train_child
from mnms_env.features import featurize
from mnms_env.records import ChildRequest
from mnms_env.space import ChildConfig, SpaceError
from mnms_env.tasks.base import task_from_arrays

RAW = ChildConfig(
    representation="raw", representation_size=0, hidden_layers=1, width=32, learning_rate=0.01
)


@pytest.fixture(scope="module")
def blobs():
    """A small separable tabular task: three Gaussian blobs."""
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0, 3], [3, 0, 0], [0, 3, 0]], dtype=np.float32)
    y = rng.integers(3, size=600)
    x = centers[y] + rng.normal(scale=0.7, size=(600, 3)).astype(np.float32)
    task = task_from_arrays("blobs", "tabular", x, y.tolist(), seed=0)
    return task, featurize(task, "raw")


def _train(blobs, config: ChildConfig, **kwargs):
    task, features = blobs
    labels = (task.train.y, task.validation.y, task.test.y)
    return train_child(
        config, features, labels, task.num_classes, **{"budget": 3, "seed": 0} | kwargs
    )


def test_trains_to_good_accuracy_and_reports_everything(blobs) -> None:
    result = _train(blobs, RAW)
    assert result.val_accuracy > 0.85 and result.test_accuracy > 0.85
    assert result.parameters == (3 * 32 + 32) + (32 * 3 + 3)
    assert result.device == "cpu" and not result.diverged
    assert 1 <= result.best_epoch <= 3 and result.seconds > 0


def test_bf16_trains_as_well_and_says_so(blobs) -> None:
    full, mixed = _train(blobs, RAW), _train(blobs, RAW, precision="bf16")
    assert mixed.device == "cpu bf16" and mixed.parameters == full.parameters
    assert mixed.val_accuracy == pytest.approx(full.val_accuracy, abs=0.03)


def test_same_seed_same_result_on_cpu(blobs) -> None:
    config = ChildConfig(
        representation="raw", representation_size=0, dropout=0.3, optimizer="rmsprop"
    )
    a, b = _train(blobs, config), _train(blobs, config)
    assert (a.val_accuracy, a.test_accuracy, a.best_epoch) == (
        b.val_accuracy,
        b.test_accuracy,
        b.best_epoch,
    )


def test_divergence_is_a_result_not_a_crash(blobs) -> None:
    config = ChildConfig(
        representation="raw",
        representation_size=0,
        optimizer="sgd",
        learning_rate=1e4,
        hidden_layers=3,
        width=256,
    )
    result = _train(blobs, config)
    assert result.diverged
    assert 0.0 <= result.val_accuracy <= 1.0


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adagrad", "rmsprop"])
def test_every_optimizer_learns(blobs, optimizer: str) -> None:
    lr = {"sgd": 0.05, "adagrad": 0.1}.get(optimizer, 0.01)
    config = ChildConfig(
        representation="raw", representation_size=0, optimizer=optimizer, learning_rate=lr
    )
    assert _train(blobs, config).val_accuracy > 0.8


def test_bag_features_use_a_sparse_first_layer() -> None:
    config = ChildConfig(representation="word-hash", representation_size=64, hidden_layers=0)
    net = ChildNet(config, in_dim=64, num_classes=2, bag=True)
    assert sum(p.numel() for p in net.parameters()) == 64 * 2 + 2


@pytest.mark.parametrize(
    ("flags", "warns"),
    [
        (frozenset({"avx2", "fma"}), True),  # an AMD EPYC without AVX-512
        (frozenset({"avx512f", "avx512_bf16"}), False),
        (frozenset({"amx_bf16"}), False),
        (frozenset({"asimd", "bf16"}), False),  # Arm with FEAT_BF16
        (None, False),  # flags unknown (not Linux): nothing to go on
    ],
)
def test_bf16_on_a_cpu_without_bf16_instructions_warns_with_the_fix(
    monkeypatch, flags, warns
) -> None:
    import warnings

    import mnms_env.child as child
    from mnms_env import BatchedEvaluator, SequentialEvaluator

    monkeypatch.setattr(child, "cpu_flags", lambda: flags)
    for make in (SequentialEvaluator, BatchedEvaluator):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            make(device="cpu", precision="bf16")
            make(device="cpu", precision="fp32")
        slow = [w for w in caught if issubclass(w.category, child.SlowPrecisionWarning)]
        assert len(slow) == int(warns)
        if warns:
            text = str(slow[0].message)
            assert "17x slower" in text and "precision='fp32'" in text and "avx512_bf16" in text


def test_values_no_trainer_could_use_are_refused_where_they_enter() -> None:
    """Each failed only inside training: an overflowing generator seed, a dict for a config, an
    infinite rate, a device torch has no backend for here."""
    config = ChildConfig(representation="raw", representation_size=0)
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*32\), got 4294967296"):
        ChildRequest("wine", config, seed=2**32, fingerprint="fp")
    with pytest.raises(TypeError, match="config must be a ChildConfig, got dict"):
        ChildRequest("wine", {"width": 3}, fingerprint="fp")
    for field in ("learning_rate", "l2"):
        with pytest.raises(SpaceError, match=f"ChildConfig.{field}=inf is out of range"):
            ChildConfig(**{field: float("inf")})
    for device in ("mps", "xpu", "meta"):
        with pytest.raises(ValueError, match=f"has no {device} device; use 'cpu'"):
            resolve_device(device)
