from dataclasses import replace

import numpy as np
import pytest

from mnms_env.space import ChildConfig, Decision, SearchSpace, SpaceError, default_space


def test_default_space_has_the_papers_decisions() -> None:
    space = default_space()
    assert space.names == (
        "representation",
        "representation_size",
        "embedding_init",
        "embedding_dim",
        "filter_widths",
        "filters",
        "hidden_layers",
        "width",
        "activation",
        "dropout",
        "optimizer",
        "learning_rate",
        "batch_size",
        "l2",
    )
    options = {d.name: d.options for d in space.decisions}
    assert {"adam", "sgd", "adagrad", "rmsprop"} <= set(options["optimizer"])
    lrs = options["learning_rate"]
    assert min(lrs) == 1e-4 and max(lrs) == 1e-1
    assert options["hidden_layers"] == (0, 1, 2, 3)


def test_text_featurizers_are_masked_on_tabular_tasks() -> None:
    space = default_space()
    reps = space.decisions[0].options
    tab = space.masks("tabular")[0, : len(reps)]
    text = space.masks("text")[0, : len(reps)]
    assert [r for r, ok in zip(reps, tab, strict=True) if ok] == ["raw"]
    assert "raw" not in [r for r, ok in zip(reps, text, strict=True) if ok]
    assert {"word-hash", "char-hash", "embedding-bag"} <= {
        r for r, ok in zip(reps, text, strict=True) if ok
    }


def test_padding_options_are_masked() -> None:
    space = default_space()
    masks = space.masks("text")
    for i, n in enumerate(space.sizes):
        assert not masks[i, n:].any()


def test_decode_and_encode_round_trip() -> None:
    space = default_space()
    rng = np.random.default_rng(0)
    masks = space.masks("text")
    for _ in range(50):
        idx = [int(rng.choice(np.flatnonzero(row))) for row in masks]
        config = space.decode(idx, "text")
        assert space.decode(space.encode(config), "text") == config


def test_dense_representation_drops_its_size() -> None:
    space = default_space()
    a = space.decode([4, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 2, 2, 0], "tabular")
    b = space.decode([4, 2, 0, 0, 0, 0, 1, 1, 0, 0, 0, 2, 2, 0], "tabular")
    assert a == b and a.representation_size == 0


def test_decode_rejects_masked_option_with_valid_range() -> None:
    with pytest.raises(SpaceError, match=r"'representation'.*valid indices: \[4\]"):
        default_space().decode([0] * 14, "tabular")


def test_unknown_decision_suggests_the_nearest() -> None:
    with pytest.raises(SpaceError, match=r"unknown decision 'widht'.*Did you mean 'width'"):
        Decision("widht", (1, 2))


@pytest.mark.parametrize(
    ("name", "option"),
    [("activation", "swish"), ("optimizer", "lbfgs"), ("dropout", 1.5), ("representation", "bert")],
)
def test_unknown_option_is_rejected(name: str, option: object) -> None:
    with pytest.raises(SpaceError, match=name):
        Decision(name, (option,))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("width", 64.5, "width=64.5 is not a whole number"),
        ("batch_size", True, "batch_size=True is not a whole number"),
        ("learning_rate", "x", "learning_rate='x' is not a number"),
    ],
)
def test_a_number_of_the_wrong_kind_is_named(name: str, value: object, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        ChildConfig(**{name: value})
    with pytest.raises(SpaceError, match=f"decision {name!r}"):
        Decision(name, (value,))


def test_numpy_numbers_become_python_numbers() -> None:
    """Options read from an array still give configs that serialise and hash as usual."""
    decision = Decision("width", tuple(np.array([32, 64])))
    config = ChildConfig(width=decision.options[1], dropout=np.float32(0.5))
    assert [type(o) for o in decision.options] == [int, int]
    assert config == ChildConfig(width=64, dropout=0.5)
    assert '"width": 64' in config.to_json()


def test_encode_refuses_a_config_the_space_cannot_choose() -> None:
    space = SearchSpace((Decision("width", (8, 16)), Decision("learning_rate", (0.01, 0.1))))
    tabular = {"representation": "raw", "representation_size": 0}
    assert space.encode(ChildConfig(**tabular, width=16, learning_rate=0.01)) == [1, 0]
    with pytest.raises(SpaceError, match=r"\{'l2': 0.001\} cannot be chosen in this space"):
        space.encode(ChildConfig(**tabular, width=16, learning_rate=0.01, l2=1e-3))
    deep = SearchSpace((Decision("hidden_layers", (0, 1)), Decision("width", (8, 16))))
    shallow = ChildConfig(**tabular, hidden_layers=0, width=16)  # width means nothing here
    assert deep.decode(deep.encode(shallow), "tabular") == replace(shallow, width=128)


def test_custom_space_keeps_defaults_for_missing_decisions() -> None:
    space = SearchSpace((Decision("width", (8, 16)), Decision("learning_rate", (0.01, 0.1))))
    config = space.decode([1, 0], "tabular")
    assert config == ChildConfig(
        representation="raw", representation_size=0, width=16, learning_rate=0.01
    )


def test_space_errors() -> None:
    with pytest.raises(SpaceError, match="more than once"):
        SearchSpace((Decision("width", (8,)), Decision("width", (16,))))
    with pytest.raises(SpaceError, match="no options"):
        Decision("width", ())
    space = SearchSpace((Decision("representation", ("word-hash",)),))
    with pytest.raises(SpaceError, match="no option valid for tabular"):
        space.masks("tabular")


def test_describe_names_what_matters_for_training() -> None:
    deep = ChildConfig(
        representation="char-hash",
        representation_size=1024,
        hidden_layers=2,
        dropout=0.3,
        learning_rate=0.01,
        l2=1e-4,
    )
    assert (
        deep.describe()
        == "char-hash 1024, 2x128 relu dropout 0.3, adam lr 0.01 l2 0.0001, batch 64"
    )
    linear = ChildConfig(representation="minilm", representation_size=0, hidden_layers=0)
    assert linear.describe() == "minilm, linear, adam lr 0.001, batch 64"
    cnn = ChildConfig(representation="tokens", hidden_layers=0, dropout=0.5, filter_widths=(3,))
    assert cnn.describe() == (
        "tokens 4096, cnn 100x3 relu on random 128d dropout 0.5, linear, adam lr 0.001, batch 64"
    )


def test_with_options_replaces_one_decision_and_names_a_missing_one() -> None:
    space = default_space()
    narrowed = space.with_options("representation", ["word-hash", "char-hash"])
    assert narrowed.decisions[0] == Decision("representation", ("word-hash", "char-hash"))
    assert narrowed.decisions[1:] == space.decisions[1:]
    with pytest.raises(SpaceError, match="no decision 'widht'"):
        space.with_options("widht", [32])


MLP_JSON = (
    '{"activation": "tanh", "batch_size": 32, "dropout": 0.3, "hidden_layers": 2, "l2": 0.0001, '
    '"learning_rate": 0.01, "optimizer": "sgd", "representation": "char-hash", '
    '"representation_size": 1024, "width": 64}'
)
"""An MLP config's JSON and store key as written before CNN children existed."""
MLP_KEY = "f244a3af8bb6c6dcf5f448d840e311e83eab4d25c272b63ee7b675fddbd73815"


def test_an_mlp_config_keeps_its_json_and_store_key() -> None:
    """Every stored result and shipped table is keyed by these: the CNN's settings stay out of
    an MLP's JSON, old JSON reads back as the same MLP, and an MLP decoded from the default
    space (whatever its CNN decisions) is that config."""
    from mnms_env import ChildRequest
    from mnms_env.store import ResultStore

    mlp = ChildConfig(
        representation="char-hash",
        representation_size=1024,
        hidden_layers=2,
        width=64,
        activation="tanh",
        dropout=0.3,
        optimizer="sgd",
        learning_rate=0.01,
        batch_size=32,
        l2=1e-4,
    )
    assert mlp.to_json() == MLP_JSON and ChildConfig.from_json(MLP_JSON) == mlp
    request = ChildRequest("langid-es", mlp, 3, 2, fingerprint="0123abcd")
    assert ResultStore.key(request) == MLP_KEY
    space = default_space()
    chosen = space.encode(mlp)
    for cnn_choice in ([0, 0, 0, 0], [2, 2, 1, 2]):  # embedding_init .. filters: irrelevant here
        chosen[2:6] = cnn_choice
        assert space.decode(chosen, "text").to_json() == MLP_JSON


def test_filter_widths_read_from_json_lists_are_tuples() -> None:
    """A CNN config survives JSON (a table header, `info["child"]`), which has no tuples."""
    cnn = ChildConfig(representation="tokens", hidden_layers=0, filter_widths=[2, 3], filters=8)
    assert cnn.filter_widths == (2, 3) and ChildConfig.from_json(cnn.to_json()) == cnn
    assert Decision("filter_widths", ([3], [3, 4, 5])).options == ((3,), (3, 4, 5))
    with pytest.raises(SpaceError, match=r"filter_widths=\(5, 3\) is not an increasing tuple"):
        ChildConfig(filter_widths=(5, 3))
