"""ALiBi and T5: reference values from the authors' rules, and the properties of their biases."""

import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.encodings import REGISTRY, alibi_slopes, available, t5_relative_bucket
from posenc_jax.errors import ConfigError
from posenc_jax.inspection import attention_bias, build_encoding

# Slopes worked out by hand from the ALiBi authors' get_slopes (power-of-2 rule, and for other
# head counts the slopes of the next lower power of 2 followed by every other slope of twice it).
ALIBI_REFERENCE = {
    1: [2**-8],
    2: [2**-4, 2**-8],
    8: [2**-k for k in range(1, 9)],
    6: [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3],
    12: [2**-k for k in range(1, 9)] + [2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5],
}


@pytest.mark.parametrize("heads", sorted(ALIBI_REFERENCE))
def test_alibi_slopes_match_the_authors_rule(heads):
    np.testing.assert_allclose(alibi_slopes(heads), ALIBI_REFERENCE[heads], rtol=1e-6)


# Buckets worked out by hand from T5's reference _relative_position_bucket (Mesh TF / flaxformer),
# relative position = key − query, 32 buckets, max_distance 128.
T5_BIDIRECTIONAL = {
    0: 0,
    -1: 1,
    -7: 7,
    -8: 8,
    -15: 9,
    -16: 10,
    -127: 15,
    -128: 15,
    -5000: 15,
    1: 17,
    7: 23,
    8: 24,
    16: 26,
    128: 31,
    5000: 31,
}
T5_CAUSAL = {5: 0, 0: 0, -5: 5, -15: 15, -16: 16, -20: 17, -32: 21, -127: 31, -128: 31, -5000: 31}


@pytest.mark.parametrize("bidirectional, table", [(True, T5_BIDIRECTIONAL), (False, T5_CAUSAL)])
def test_t5_buckets_match_the_reference(bidirectional, table):
    relative = np.array(list(table))
    assert t5_relative_bucket(relative, bidirectional=bidirectional).tolist() == list(
        table.values()
    )


def test_t5_buckets_are_monotone_and_in_range():
    relative = np.arange(-1000, 1001)
    buckets = np.asarray(t5_relative_bucket(relative))
    assert buckets.min() == 0 and buckets.max() == 31
    assert (np.diff(buckets[:1000]) <= 0).all()  # keys further left: non-increasing up to 0
    assert (np.diff(buckets[1001:]) >= 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_alibi_bias_is_zero_on_diagonal_and_monotone_in_distance(causal):
    bias = np.asarray(attention_bias("alibi", 20, 20, 6, causal=causal))
    slopes = alibi_slopes(6)
    assert bias.shape == (6, 20, 20)
    assert (np.diagonal(bias, axis1=1, axis2=2) == 0).all()
    i, j = np.meshgrid(np.arange(20), np.arange(20), indexing="ij")
    expected = (j - i) if causal else -np.abs(i - j)
    np.testing.assert_allclose(bias, slopes[:, None, None] * expected[None], rtol=1e-6)
    row = bias[:, 10, :11]  # keys 0..10 seen from query 10: penalty grows with distance
    assert (np.diff(row, axis=-1) > 0).all()


def test_t5_attention_bias_looks_up_one_table_by_bucket():
    bias = np.asarray(attention_bias("t5", 4, 300, 3, seed=1))
    assert bias.shape == (3, 4, 300)
    # Same bucket -> same value: keys 200 and 299 are both past max_distance from query 0.
    np.testing.assert_array_equal(bias[:, 0, 200], bias[:, 0, 299])
    assert not np.allclose(bias[:, 0, 0], bias[:, 0, 1])


@pytest.mark.parametrize("encoding", ["alibi", "t5", "kerple", "fire"])
def test_attention_bias_serves_every_content_independent_bias(encoding):
    bias = np.asarray(attention_bias(encoding, 5, 7, 3, seed=2))
    assert bias.shape == (3, 5, 7) and np.isfinite(bias).all()


@pytest.mark.parametrize("encoding, params", [("kerple", {"per_layer": True}), ("fire", {})])
def test_per_layer_biases_differ_between_layers(encoding, params):
    first, second = (
        np.asarray(attention_bias(encoding, 6, 6, 2, layer=layer, **params)) for layer in (0, 1)
    )
    assert np.max(np.abs(first - second)) > 1e-3
    with pytest.raises(ConfigError, match=r"layer=2 is out of range"):
        attention_bias(encoding, 6, 6, 2, layer=2)


@pytest.mark.parametrize("encoding", ["rope", "shaw", "cope"])
def test_attention_bias_rejects_encodings_without_a_bias(encoding):
    expected = r"\['alibi', 'fire', 'kerple', 't5'\]"
    with pytest.raises(
        ConfigError, match=rf"'{encoding}' adds no content-independent bias.*{expected}"
    ):
        attention_bias(encoding, 4, 4, 2)


@pytest.mark.parametrize("encoding", available())
def test_adds_logit_bias_is_declared_truthfully(encoding):
    """`adds_logit_bias` is a declared fact; it must say what the module's hook really does."""
    module = build_encoding(encoding, num_heads=2, causal=True)  # FoX etc. need a decoder
    positions = jnp.arange(4)[None]
    bias = module.logit_bias(positions, positions, 0)
    assert (bias is not None) == REGISTRY[encoding].adds_logit_bias


@pytest.mark.parametrize("encoding, params", [("kerple", {"per_layer": True}), ("fire", {})])
def test_attention_bias_checks_the_layer_against_the_model_it_builds(encoding, params):
    """JAX would clamp an out-of-range layer to the last one: a silent wrong picture."""
    deep = [
        np.asarray(attention_bias(encoding, 4, 4, 2, layer=k, num_layers=4, **params))
        for k in (0, 3)
    ]
    assert np.max(np.abs(deep[0] - deep[1])) > 1e-3
    with pytest.raises(ConfigError, match=r"layer=1 is out of range; a model of num_layers=1"):
        attention_bias(encoding, 4, 4, 2, layer=1, num_layers=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_heads": 0}, r"num_heads=0 must be an integer >= 1"),
        ({"num_heads": 2.0}, r"num_heads=2.0 must be an integer >= 1"),
        ({"q_len": -3}, r"q_len=-3 must be an integer >= 1"),
        ({"q_len": 2.5}, r"q_len=2.5 must be an integer >= 1"),
        ({"layer": True}, r"layer=True is out of range"),
        ({"seed": "a"}, r"seed='a' must be an integer in \[0, 2\^63\)"),
        ({"seed": 2**63}, r"seed=9223372036854775808 must be an integer in \[0, 2\^63\)"),
        ({"causal": "no"}, r"causal='no' in build_encoding's arguments has the wrong type"),
    ],
)
def test_attention_bias_refuses_bad_arguments_in_one_paragraph(kwargs, message):
    arguments = {"q_len": 4, "k_len": 4, "num_heads": 2, **kwargs}
    with pytest.raises(ConfigError, match=message):
        attention_bias("alibi", **arguments)


def test_build_encoding_takes_d_model_zero_as_a_value_not_as_unset():
    with pytest.raises(ConfigError, match=r"model.d_model=0 must be positive"):
        build_encoding("alibi", d_model=0)
