"""Per-layer hybrids: every layer gets exactly its own encoding, parameters are built per
distinct entry for the layers that use it, and bad patterns are refused by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from posenc_jax.errors import ConfigError
from posenc_jax.model import build_model
from posenc_jax.outputs import hparams

from helpers import make_settings, perturb_parameters


def _layer_weights(*overrides: str) -> list[np.ndarray]:
    settings = make_settings("task=copy", "model.num_layers=3", *overrides)
    model = build_model(settings, jax.random.key(0))
    perturb_parameters(model.encoding, seed=2)
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 2, settings.task.input_vocab_size)
    positions = jnp.broadcast_to(jnp.arange(8), (2, 8))
    return [
        np.asarray(w) for w in model.attention_weights(tokens, positions, jnp.ones((2, 8), bool))
    ]


def test_each_layer_is_its_own_encoding():
    """Layer 0 of [rope, alibi, nope] attends as layer 0 of a RoPE model, layer 1's input
    differs, so compare the first layer of each pattern with the pure model's first layer."""
    hybrid = _layer_weights("encoding=hybrid", "encoding.layers=[rope,alibi,nope]")
    rope = _layer_weights("encoding=rope")
    np.testing.assert_allclose(hybrid[0], rope[0], rtol=1e-6, atol=1e-6)
    alibi_first = _layer_weights("encoding=hybrid", "encoding.layers=[alibi,rope,nope]")
    alibi = _layer_weights("encoding=alibi")
    np.testing.assert_allclose(alibi_first[0], alibi[0], rtol=1e-6, atol=1e-6)


def test_a_hybrid_of_one_encoding_is_that_encoding():
    """[fire, fire, fire] builds one FIRE for three layers, from the same random draws, with
    per-layer parameters numbered within their users: the same model as encoding=fire."""
    pure = _layer_weights("encoding=fire")
    mixed = _layer_weights("encoding=hybrid", "encoding.layers=[fire,fire,fire]")
    for pure_layer, mixed_layer in zip(pure, mixed, strict=True):
        np.testing.assert_array_equal(mixed_layer, pure_layer)


def test_per_layer_parameters_are_counted_by_their_users():
    settings = make_settings(
        "encoding=hybrid", "model.num_layers=4", "encoding.layers=[fire,rope,fire,nope]"
    )
    model = build_model(settings, jax.random.key(0))
    fire = model.encoding.parts[0]  # parts in order of first use: fire, rope, nope
    assert all(leaf.shape[0] == 2 for leaf in jax.tree.leaves(nnx.state(fire, nnx.Param)))
    assert model.encoding.routes == ((0, 0), (1, 0), (0, 1), (2, 0))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["encoding.layers=[rope,rope,nope]"], r"has 3 entries .* model.num_layers=2"),
        (["encoding.layers=[learned,rope]"], r"entry 0 is 'learned', an absolute encoding"),
        (["encoding.layers=[rope,abacus]"], r"entry 1 is 'abacus', an absolute encoding"),
        (["encoding.layers=[rope,fox]"], r"entry 1 \('fox'\): encoding=fox is defined for dec"),
        (["encoding.layers=[rope,hybrid]"], r"entry 1 is a hybrid; hybrids do not nest"),
        (["encoding.layers=[rope,ropee]"], r"entry 1: Unknown encoding 'ropee'; valid choices"),
        (["encoding.layers=[rope,5]"], r"entry 1 \(5\) is neither an encoding's name"),
        (["encoding.layers=[rope,{base:5}]"], r"entry 1 \(\{'base': 5\}\) has no `name`"),
        (["encoding.layers=[{name:[rope]},nope]"], r"entry 0: Unknown encoding \['rope'\]"),
        (["encoding.layers=rope"], r"must be a non-empty list"),
        (["encoding.layers=[]"], r"must be a non-empty list"),
        (["encoding.randomized=true"], r"randomized=true does not apply to encoding=hybrid"),
        (
            ["encoding.layers=[{name:rope,randomized:true},nope]"],
            r"entry 0 \('rope'\) sets randomized=true",
        ),
        (["encoding.layers=[{name:rope,base:0.5},nope]"], r"entry 0 \('rope'\): encoding.base"),
    ],
)
def test_bad_patterns_are_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_settings("encoding=hybrid", *overrides)


def test_entries_take_parameters_and_show_them_in_hparams():
    settings = make_settings(
        "encoding=hybrid", "encoding.layers=[{name:rope,base:500},alibi]", "model.causal=true"
    )
    assert settings.encoding.layers[0].base == 500.0
    flat = hparams(settings)
    assert flat["encoding.layers.0.name"] == "rope" and flat["encoding.layers.0.base"] == 500.0
    assert flat["encoding.layers.1.name"] == "alibi"
    assert settings.encoding.family == "relative"
