"""Text CNN children: training, the env, masks, GloVe embeddings and the missing extra."""

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch

from mnms_env import ChildConfig, ChildRequest, SequentialEvaluator, default_space
from mnms_env import cnn as cnn_module
from mnms_env.child import train_child
from mnms_env.features import MissingExtraError, featurize
from mnms_env.records import Child
from mnms_env.space import SpaceError, canonical_config

CNN = ChildConfig(
    representation="tokens",
    representation_size=64,
    hidden_layers=0,
    dropout=0.5,
    learning_rate=0.01,
    batch_size=16,
    embedding_dim=16,
    filter_widths=(2, 3),
    filters=8,
)
"""A small Kim-style CNN: embeddings, widths 2 and 3, max over time, dropout, linear output."""


def _train(task, config: ChildConfig, budget: int = 4):
    features = featurize(task, config.representation, config.representation_size)
    labels = (task.train.y, task.validation.y, task.test.y)
    return train_child(config, features, labels, task.num_classes, budget=budget, seed=0)


def test_a_cnn_child_trains_and_reports_like_any_other(phrases) -> None:
    result = _train(phrases, CNN)
    assert result.val_accuracy >= 0.9 and result.test_accuracy >= 0.9
    embeddings, convs, output = 64 * 16, sum(16 * 8 * w + 8 for w in (2, 3)), 16 * 2 + 2
    assert result.parameters == embeddings + convs + output
    assert result.device == "cpu" and not result.diverged
    assert 1 <= result.best_epoch <= 4 and result.seconds > 0


def test_same_seed_same_cnn_result_on_cpu(phrases) -> None:
    config = replace(CNN, hidden_layers=1, width=16, optimizer="rmsprop", learning_rate=3e-3)
    a, b = _train(phrases, config, budget=2), _train(phrases, config, budget=2)
    assert (a.val_accuracy, a.test_accuracy, a.best_epoch, a.parameters) == (
        b.val_accuracy,
        b.test_accuracy,
        b.best_epoch,
        b.parameters,
    )


def test_a_diverged_cnn_is_a_result_not_a_crash(phrases) -> None:
    result = _train(phrases, replace(CNN, optimizer="sgd", learning_rate=1e4), budget=2)
    assert result.diverged and 0.0 <= result.val_accuracy <= 1.0


def test_a_texts_features_do_not_depend_on_its_batch() -> None:
    """Max over time skips the padding: a short text alone and beside a longer one (its batch
    padded further) gives the same pooled features, as does a text shorter than a filter."""
    torch.manual_seed(0)
    net = cnn_module.TextCNN(CNN, np.array([""] * 64)).eval()
    short = torch.tensor([[5, 6, 0, 0, 0, 0]])
    longer = torch.tensor([[5, 6, 0, 0, 0, 0], [7, 8, 9, 10, 11, 12]])
    one_word = torch.tensor([[5, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(net(short)[0], net(longer)[0])
        assert net(one_word).isfinite().all()


def _choose(env, wanted: dict) -> tuple[float, dict]:
    """Step the env choosing `wanted[name]` where given, else the first valid option."""
    _, info = env.reset(seed=0)
    space = env.unwrapped.space
    for decision in space.decisions:
        if decision.name in wanted:
            action = decision.options.index(wanted[decision.name])
        else:
            action = int(np.flatnonzero(info["action_mask"])[0])
        _, reward, terminated, _, info = env.step(action)
    assert terminated
    return reward, info


def test_the_env_designs_and_trains_a_cnn_child() -> None:
    env = gym.make("mnms_env:MNMS-v2", task="word-sentiment-en", store=None)
    wanted = {
        "representation": "tokens",
        "representation_size": 256,
        "embedding_dim": 50,
        "filter_widths": (3,),
        "filters": 50,
        "batch_size": 256,
    }
    reward, info = _choose(env, wanted)
    child = Child.from_info(info["child"])
    config = child.request.config
    assert config.is_cnn and config.filter_widths == (3,) and config.filters == 50
    assert reward == child.result.val_accuracy and 0.0 < reward <= 1.0
    assert child.result.parameters > 256 * 50 and not child.cached


def test_the_cnn_is_masked_for_tabular_tasks() -> None:
    space = default_space()
    representations = space.decisions[space.names.index("representation")].options
    tokens = representations.index("tokens")
    assert not space.masks("tabular")[0, tokens] and space.masks("text")[0, tokens]
    chosen = [int(np.flatnonzero(row)[0]) for row in space.masks("tabular")]
    with pytest.raises(SpaceError, match=r"'representation'.*valid indices: \[4\]"):
        space.decode([tokens, *chosen[1:]], "tabular")
    # The CNN's decisions mean nothing to a tabular child: any choice, one config.
    other = [*chosen[:2], 0, 2, 1, 2, *chosen[6:]]
    assert space.decode(chosen, "tabular") == space.decode(other, "tabular")
    assert "filters" not in space.decode(other, "tabular").to_json()


def test_glove_fixes_the_embedding_width() -> None:
    chosen = {"representation": "tokens", "embedding_init": "glove-tuned", "embedding_dim": 300}
    assert canonical_config(chosen, "text").embedding_dim == 50
    with pytest.raises(SpaceError, match=r"'glove-static' has 50-d vectors.*got embedding_dim=128"):
        replace(CNN, embedding_init="glove-static", embedding_dim=128)


def _missing_glove(monkeypatch) -> None:
    """The GloVe options as they are without their package (new entries: masks made afresh)."""
    for name in ("glove-static", "glove-tuned"):
        missing = replace(cnn_module.EMBEDDING_INITS[name], package="a_package_not_installed")
        monkeypatch.setitem(cnn_module.EMBEDDING_INITS, name, missing)


def test_without_the_glove_extra_its_options_are_masked_and_name_it(monkeypatch, phrases) -> None:
    """Masked for the env and `decode`, whose refusals say why; trained anyway, the child's
    `MissingExtraError` names the extra."""
    _missing_glove(monkeypatch)
    space = default_space()
    step = space.names.index("embedding_init")
    assert space.masks("text")[step, :3].tolist() == [True, False, False]
    extra = r"'glove-tuned' needs the package .*: pip install 'mnms-env\[glove\]'"
    chosen = [int(np.flatnonzero(row)[0]) for row in space.masks("text")]
    chosen[step] = 2
    with pytest.raises(SpaceError, match=r"valid indices: \[0\] .*" + extra):
        space.decode(chosen, "text")
    env = gym.make("mnms_env:MNMS-v2", task="word-sentiment-en", store=None)
    env.reset(seed=0)
    for action in chosen[:step]:
        env.step(action)
    with pytest.raises(ValueError, match=r"valid actions are \[0\] .*" + extra):
        env.step(2)
    glove = replace(CNN, embedding_init="glove-static", embedding_dim=50)
    request = ChildRequest.for_task(phrases, glove)
    with pytest.raises(MissingExtraError, match=r"'glove-static'.*pip install 'mnms-env\[glove\]'"):
        SequentialEvaluator(device="cpu", tasks={"phrases": phrases}.__getitem__).evaluate(
            [request]
        )


@pytest.mark.skipif(
    not cnn_module.EMBEDDING_INITS["glove-static"].available(), reason="needs the glove extra"
)
def test_glove_embeddings_start_from_the_vectors_and_static_ones_stay(phrases) -> None:
    vectors = cnn_module._glove()
    vocabulary = np.array(["", "", "good", "not-a-glove-word"])
    weights = cnn_module.initial_embeddings("glove-static", vocabulary, 50)
    assert torch.equal(weights[2], torch.from_numpy(vectors.vectors[vectors.index["good"]]))
    assert not weights[0].any() and weights[3].abs().max() <= vectors.scale
    config = replace(CNN, embedding_init="glove-static", embedding_dim=50)
    assert _train(phrases, config, budget=2).val_accuracy >= 0.7
    static = cnn_module.TextCNN(config, vocabulary)
    tuned = cnn_module.TextCNN(replace(config, embedding_init="glove-tuned"), vocabulary)
    assert not static.embedding.weight.requires_grad and tuned.embedding.weight.requires_grad
