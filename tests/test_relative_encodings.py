"""Shaw, DeBERTa, Transformer-XL, KERPLE, FIRE and CoPE against plain-numpy references written
from each paper's formula (and, where the official code differs from the paper, from the code),
one query/key pair at a time. The library computes the same numbers by gathers, kernels and
algebraic rewrites; these loops share none of that code."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from posenc_jax.encodings.base import Context
from posenc_jax.encodings.transformer_xl import position_sinusoids

from helpers import perturbed_encoding

B, T, H, D_HEAD = 2, 7, 2, 4
D_MODEL = H * D_HEAD
# Sorted, with gaps wider than the small clipping distances used below.
POSITIONS = np.array([[0, 1, 3, 7, 20, 21, 40], [0, 2, 3, 4, 5, 9, 12]])


def _qkv(seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    return [np.asarray(jax.random.normal(k, (B, T, H, D_HEAD))) for k in keys]


def _mask(causal):
    lower = np.tril(np.ones((T, T), bool)) if causal else np.ones((T, T), bool)
    return np.broadcast_to(lower, (B, 1, T, T))


def _context(positions, causal=False) -> Context:
    return Context(positions, positions, jnp.asarray(_mask(causal)), slot=None)


def _logits(module, q, k, causal=False, layer=1):
    positions = jnp.asarray(POSITIONS)
    return np.asarray(
        module.attention_logits(
            jnp.asarray(q), jnp.asarray(k), _context(positions, causal), None, layer
        )
    )


def _p(module, name, layer=None):
    value = np.asarray(getattr(module, name)[...], np.float64)
    return value if layer is None else value[layer]


# --- Shaw et al. 2018 -----------------------------------------------------------------------


@pytest.mark.parametrize("values", [True, False])
def test_shaw_matches_the_per_pair_formula(values):
    kmax, layer = 3, 1
    module = perturbed_encoding(
        "shaw", d_model=D_MODEL, num_heads=H, max_distance=kmax, values=values
    )
    q, k, v = _qkv()
    key_table = _p(module, "key_table", layer)
    expected = np.zeros((B, H, T, T))
    for b, h, i, j in np.ndindex(B, H, T, T):
        r = min(max(POSITIONS[b, j] - POSITIONS[b, i], -kmax), kmax) + kmax
        expected[b, h, i, j] = q[b, i, h] @ (k[b, j, h] + key_table[r]) / math.sqrt(D_HEAD)
    np.testing.assert_allclose(_logits(module, q, k, layer=layer), expected, rtol=1e-5, atol=1e-5)

    weights = np.asarray(jax.nn.softmax(jnp.asarray(expected), axis=-1))
    expected_out = np.einsum("bhqk,bkhd->bqhd", weights, v)
    if values:
        value_table = _p(module, "value_table", layer)
        for b, h, i, j in np.ndindex(B, H, T, T):
            r = min(max(POSITIONS[b, j] - POSITIONS[b, i], -kmax), kmax) + kmax
            expected_out[b, i, h] += weights[b, h, i, j] * value_table[r]
    positions = jnp.asarray(POSITIONS)
    out = module.attention_output(jnp.asarray(weights), jnp.asarray(v), positions, positions, layer)
    np.testing.assert_allclose(np.asarray(out), expected_out, rtol=1e-5, atol=1e-5)


# --- DeBERTa (He et al. 2021) ---------------------------------------------------------------


def _deberta_delta(i_minus_j, kmax):
    """δ(i, j) written as the paper's three cases."""
    if i_minus_j <= -kmax:
        return 0
    if i_minus_j >= kmax:
        return 2 * kmax - 1
    return i_minus_j + kmax


def test_deberta_delta_cases():
    assert [_deberta_delta(d, 2) for d in (-5, -2, -1, 0, 1, 2, 9)] == [0, 0, 1, 2, 3, 3, 3]


def _deberta_reference(module, q, k, positions, kmax, c2p=True, p2c=True, layer=1):
    table = _p(module, "table")
    position_keys = np.einsum("rm,mhd->rhd", table, _p(module, "key_projection", layer))
    position_queries = np.einsum("rm,mhd->rhd", table, _p(module, "query_projection", layer)) + _p(
        module, "query_bias", layer
    )
    expected = np.zeros((B, H, T, T))
    for b, h, i, j in np.ndindex(B, H, T, T):
        delta = _deberta_delta(positions[b, i] - positions[b, j], kmax)
        score = q[b, i, h] @ k[b, j, h]
        score += c2p * (q[b, i, h] @ position_keys[delta, h])
        # The official code's position→content row is δ(i, j) too (the paper writes δ(j, i)).
        score += p2c * (k[b, j, h] @ position_queries[delta, h])
        expected[b, h, i, j] = score / math.sqrt((1 + c2p + p2c) * D_HEAD)
    return expected


@pytest.mark.parametrize("c2p, p2c", [(True, True), (True, False), (False, True)])
def test_deberta_matches_the_per_pair_formula(c2p, p2c):
    kmax = 4  # distances in POSITIONS reach 40: clipped on both sides
    module = perturbed_encoding(
        "deberta", d_model=D_MODEL, num_heads=H, max_distance=kmax, c2p=c2p, p2c=p2c
    )
    q, k, _ = _qkv()
    expected = _deberta_reference(module, q, k, POSITIONS, kmax, c2p, p2c)
    np.testing.assert_allclose(_logits(module, q, k), expected, rtol=1e-5, atol=1e-5)


def test_deberta_scores_only_the_rows_that_slot_positions_can_reach():
    # k = 16 > T = 7: only rows of |i − j| < 7 are scored (DeBERTa's att_span), same numbers.
    kmax = 16
    module = perturbed_encoding("deberta", d_model=D_MODEL, num_heads=H, max_distance=kmax)
    q, k, _ = _qkv()
    positions = np.broadcast_to(np.arange(T) + 5, (B, T))
    p = jnp.asarray(positions)
    actual = np.asarray(
        module.attention_logits(jnp.asarray(q), jnp.asarray(k), _context(p), None, 1)
    )
    np.testing.assert_allclose(
        actual, _deberta_reference(module, q, k, positions, kmax), rtol=1e-5, atol=1e-5
    )
    # Distances that slot positions cannot have (POSITIONS has gaps) are NaN, never a wrong row.
    i_minus_j = POSITIONS[:, :, None] - POSITIONS[:, None, :]
    outside_span = (i_minus_j >= T) | (i_minus_j < -T)  # the kept rows cover −T <= i − j < T
    assert outside_span.any()
    np.testing.assert_array_equal(
        np.isnan(_logits(module, q, k)), np.broadcast_to(outside_span[:, None], (B, H, T, T))
    )
    # With randomized positions every row up to max_position is kept.
    randomized = perturbed_encoding(
        "deberta", d_model=D_MODEL, num_heads=H, max_distance=kmax, randomized=True, max_position=64
    )
    np.testing.assert_allclose(
        _logits(randomized, q, k),
        _deberta_reference(randomized, q, k, POSITIONS, kmax),
        rtol=1e-5,
        atol=1e-5,
    )


# --- Transformer-XL (Dai et al. 2019) -------------------------------------------------------


def _transformer_xl_reference(module, q, k, positions, layer):
    """The official per-pair formula, in float64: R[i − j] built from the distance itself."""
    u, v = _p(module, "content_bias"), _p(module, "position_bias")
    w_r = _p(module, "position_projection", layer)  # [D_MODEL, H, D_HEAD]
    inv_freq = 1.0 / 10000 ** (np.arange(0, D_MODEL, 2) / D_MODEL)
    expected = np.zeros((B, H, T, T))
    for b, h, i, j in np.ndindex(B, H, T, T):
        delta = float(positions[b, i] - positions[b, j])
        r = np.concatenate([np.sin(delta * inv_freq), np.cos(delta * inv_freq)])  # R[i − j]
        expected[b, h, i, j] = (
            (q[b, i, h] + u[h]) @ k[b, j, h] + (q[b, i, h] + v[h]) @ (r @ w_r[:, h])
        ) / math.sqrt(D_HEAD)
    return expected


SPREAD = np.sort(np.random.default_rng(0).choice(2**24, (B, T), replace=False), axis=1)


@pytest.mark.parametrize(
    "positions",
    [POSITIONS, POSITIONS + 1500, POSITIONS + 2**24 - 41, SPREAD, POSITIONS[:, ::-1] + 9],
    ids=["small", "shifted", "near-2^24", "spread-over-2^24", "first-is-largest"],
)
def test_transformer_xl_matches_the_per_pair_formula(positions):
    """Exact at any position below 2^24, however far apart: float32 angles of the positions
    themselves were off by 6e-4 in the logits at a span of 2048."""
    layer = 1
    module = perturbed_encoding("transformer_xl", d_model=D_MODEL, num_heads=H)
    q, k, _ = _qkv()
    p = jnp.asarray(positions, jnp.int32)
    actual = np.asarray(
        module.attention_logits(jnp.asarray(q), jnp.asarray(k), _context(p), None, layer)
    )
    expected = _transformer_xl_reference(module, q, k, positions, layer)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_position_sinusoids_are_accurate_for_every_offset_below_2_24():
    drawn = np.random.default_rng(1).integers(-(2**24) + 1, 2**24, 3000)
    offsets = np.concatenate([np.arange(-300, 300), drawn])
    frequencies = 10000.0 ** -(np.arange(0, 64, 2) / 64)
    sin, cos = position_sinusoids(jnp.asarray(offsets, jnp.int32), frequencies)
    angles = offsets[:, None].astype(np.float64) * frequencies
    # float32 angles would be off by up to half an ulp of p·ω: 0.5 rad near 2^24.
    np.testing.assert_allclose(np.asarray(sin), np.sin(angles), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(cos), np.cos(angles), rtol=0, atol=1e-6)
    # Past the tables there is no wrapped-around angle, only NaN.
    outside = position_sinusoids(jnp.asarray([2**24, -(2**24)], jnp.int32), frequencies)
    assert np.isnan(np.asarray(outside)).all()


# --- KERPLE (Chi et al. 2022) ---------------------------------------------------------------


@pytest.mark.parametrize("variant", ["log", "power"])
def test_kerple_matches_its_kernel(variant):
    layer = 1
    module = perturbed_encoding(
        "kerple", num_heads=H, d_model=D_MODEL, variant=variant, per_layer=True
    )
    r1 = np.maximum(_p(module, "r1", layer), 0.01)
    r2 = np.clip(_p(module, "r2", layer), 0.01, 2.0 if variant == "power" else None)
    positions = jnp.asarray(POSITIONS)
    actual = np.asarray(module.logit_bias(positions, positions, layer))
    for b, h, i, j in np.ndindex(B, H, T, T):
        distance = abs(POSITIONS[b, i] - POSITIONS[b, j])
        kernel = math.log(1 + r2[h] * distance) if variant == "log" else distance ** r2[h]
        assert actual[b, h, i, j] == pytest.approx(-r1[h] * kernel, rel=1e-5, abs=1e-6)


def test_kerple_shares_one_set_of_parameters_across_layers_by_default():
    """The authors' gpt2_model.py builds one KERPLE module and hands it to every layer."""
    shared = perturbed_encoding("kerple", num_heads=H, d_model=D_MODEL)
    assert shared.r1[...].shape == shared.r2[...].shape == (1, H)
    positions = jnp.asarray(POSITIONS)
    np.testing.assert_array_equal(
        shared.logit_bias(positions, positions, 0), shared.logit_bias(positions, positions, 1)
    )
    per_layer = perturbed_encoding("kerple", num_heads=H, d_model=D_MODEL, per_layer=True)
    assert per_layer.r1[...].shape == (2, H)


def test_kerple_projection_keeps_parameters_in_their_valid_set():
    module = perturbed_encoding(
        "kerple", num_heads=H, d_model=D_MODEL, variant="power", per_layer=True
    )
    module.r1[...] = jnp.array([[-1.0, 0.5], [0.0, 3.0]])
    module.r2[...] = jnp.array([[-1.0, 0.5], [2.5, 1.0]])
    module.project_parameters()
    np.testing.assert_allclose(module.r1[...], [[0.01, 0.5], [0.01, 3.0]])
    np.testing.assert_allclose(module.r2[...], [[0.01, 0.5], [2.0, 1.0]])


def test_kerple_power_gradient_is_finite_at_distance_zero():
    module = perturbed_encoding("kerple", num_heads=H, d_model=D_MODEL, variant="power")
    graphdef, params = nnx.split(module)
    positions = jnp.asarray(POSITIONS)  # includes i = j, where |i − j|^r2 has an infinite log

    def total(params):
        return nnx.merge(graphdef, params).logit_bias(positions, positions, 0).sum()

    grads = jax.tree.leaves(jax.grad(total)(params))
    assert grads and all(np.isfinite(np.asarray(g)).all() for g in grads)


# --- FIRE (Li et al. 2023) ------------------------------------------------------------------


def _fire_reference(module, positions, layer):
    c, scale = _p(module, "c", layer), _p(module, "threshold_scale", layer)
    w1, b1 = _p(module, "w1", layer), _p(module, "b1", layer)
    w2, b2 = _p(module, "w2", layer), _p(module, "b2", layer)
    expected = np.zeros((B, H, T, T))
    for b, i, j in np.ndindex(B, T, T):
        normaliser = max(positions[b, i], abs(scale * 512.0))
        x = math.log(abs(c * (positions[b, i] - positions[b, j])) + 1) / (
            math.log(abs(c * normaliser) + 1) + 1e-6
        )
        expected[b, :, i, j] = np.maximum(x * w1 + b1, 0) @ w2 + b2
    return expected


@pytest.mark.parametrize("offset", [0, 1000])
def test_fire_matches_the_reference_code(offset):
    layer = 1
    module = perturbed_encoding("fire", num_heads=H, d_model=D_MODEL)
    positions = POSITIONS + offset
    p = jnp.asarray(positions)
    actual = np.asarray(module.logit_bias(p, p, layer))
    np.testing.assert_allclose(
        actual, _fire_reference(module, positions, layer), rtol=1e-5, atol=1e-5
    )


def test_fire_is_relative_below_its_threshold_and_not_past_it():
    module = perturbed_encoding("fire", num_heads=H, d_model=D_MODEL)

    def bias(offset):
        return np.asarray(
            module.logit_bias(jnp.asarray(POSITIONS + offset), jnp.asarray(POSITIONS + offset), 0)
        )

    np.testing.assert_allclose(bias(300), bias(0), rtol=1e-5, atol=1e-6)  # all positions < L ≈ 512
    assert np.max(np.abs(bias(3000) - bias(0))) > 1e-3  # normalised by the query position


# --- CoPE (Golovneva et al. 2024) -----------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("max_count", [2, 512])
def test_cope_matches_the_per_pair_formula(causal, max_count):
    layer = 1
    module = perturbed_encoding("cope", num_heads=H, d_model=D_MODEL, max_count=max_count)
    q, k, _ = _qkv()
    table = _p(module, "table", layer)  # [D_HEAD, max_count + 1]
    mask = _mask(causal)
    expected = np.zeros((B, H, T, T))
    for b, h, i in np.ndindex(B, H, T):
        content = np.array([q[b, i, h] @ k[b, j, h] for j in range(T)])
        gates = mask[b, 0, i] / (1 + np.exp(-content / math.sqrt(D_HEAD)))
        for j in range(T):
            count = min(gates[j:].sum(), max_count)
            low, high = math.floor(count), math.ceil(count)
            interpolated = (q[b, i, h] @ table[:, high]) * (count - low) + (
                q[b, i, h] @ table[:, low]
            ) * (1 - count + low)
            expected[b, h, i, j] = (content[j] + interpolated) / math.sqrt(D_HEAD)
    np.testing.assert_allclose(_logits(module, q, k, causal, layer), expected, rtol=1e-5, atol=1e-5)
