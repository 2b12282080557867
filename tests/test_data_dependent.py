"""FoX, stick-breaking and PaTH against numpy re-implementations of their official formulas,
pair by pair (FoX: zhixuan-lin/forgetting-transformer's reference attention; stick-breaking:
shawntan/stickbreaking-attention `sb_ref.py` and its layer's remainder; PaTH: fla's layer and
the naive product of the Householder-like matrices), and their properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.encodings.base import Context, attention_scores
from posenc_jax.errors import ConfigError
from posenc_jax.model import attention_mask, build_model

from helpers import make_settings, perturbed_encoding

B, H, D_HEAD = 2, 2, 4
D_MODEL = H * D_HEAD


def _inputs(length, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    q, k, v = (np.asarray(jax.random.normal(key, (B, length, H, D_HEAD))) for key in keys[:3])
    x = np.asarray(jax.random.normal(keys[3], (B, length, D_MODEL)))
    return q, k, v, x


def _context(length, token_mask=None):
    token_mask = np.ones((B, length), bool) if token_mask is None else token_mask
    positions = jnp.broadcast_to(jnp.arange(length), (B, length))
    mask = attention_mask(jnp.asarray(token_mask), causal=True)
    return Context(positions, positions, mask, slot=None)


def _scores(module, q, k, x, context, layer=1):
    features = module.slot_features(jnp.asarray(x), layer)
    return np.asarray(
        attention_scores(module, jnp.asarray(q), jnp.asarray(k), context, features, layer)
    )


def _log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# --- FoX ---------------------------------------------------------------------------------------


def fox_reference(module, q, k, x, layer):
    """A_ij = q_i·k_j/sqrt(d) + Σ_{l=j+1..i} log σ(x_l·w + b), per pair, j <= i."""
    w = np.asarray(module.gates.kernel[layer], np.float64)
    b = np.asarray(module.gates.bias[layer], np.float64)
    log_f = _log_sigmoid(np.einsum("btm,mh->bth", x, w) + b)
    length = q.shape[1]
    out = np.full((B, H, length, length), np.nan)
    for batch in range(B):
        for h in range(H):
            for i in range(length):
                for j in range(i + 1):
                    decay = log_f[batch, j + 1 : i + 1, h].sum()
                    dot = q[batch, i, h] @ k[batch, j, h] / np.sqrt(D_HEAD)
                    out[batch, h, i, j] = dot + decay
    return out


@pytest.mark.parametrize("length", [1, 5, 13])
def test_fox_logits_match_the_official_formula(length):
    module = perturbed_encoding("fox", causal=True, d_model=D_MODEL, num_heads=H)
    q, k, _, x = _inputs(length)
    actual = _scores(module, q, k, x, _context(length))
    expected = fox_reference(module, q, k, x, layer=1)
    lower = np.tril(np.ones((length, length), bool))
    np.testing.assert_allclose(actual[..., lower], expected[..., lower], rtol=1e-5, atol=1e-5)


def test_fox_with_gates_that_never_forget_is_nope():
    """f = σ(large bias) = 1: no decay, the logits are plain q·k/sqrt(d)."""
    module = perturbed_encoding("fox", causal=True, d_model=D_MODEL, num_heads=H, perturb=False)
    module.gates.bias[...] = jnp.full(module.gates.bias.shape, 60.0)
    q, k, _, x = _inputs(9)
    plain = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D_HEAD)
    lower = np.tril(np.ones((9, 9), bool))
    actual = _scores(module, q, k, x, _context(9))
    np.testing.assert_allclose(actual[..., lower], plain[..., lower], rtol=1e-5, atol=1e-5)


def test_fox_starts_with_every_gate_at_one_half():
    """The official init: weight N(0, 0.02²), bias 0: log f ≈ log 1/2, so the bias is close to
    −(i − j)·ln 2, ALiBi-like, at initialisation."""
    module = perturbed_encoding("fox", causal=True, d_model=D_MODEL, num_heads=H, perturb=False)
    assert np.all(np.asarray(module.gates.bias[...]) == 0)
    assert 0.01 < float(np.std(np.asarray(module.gates.kernel[...]))) < 0.03


# --- stick-breaking ----------------------------------------------------------------------------


def stick_breaking_reference(q, k, v, valid):
    """o_i = Σ_{j<i} A_ij v_j + (1 − Σ_j A_ij) v_i with A_ij = σ(z_ij) Π_{j<k<i} (1 − σ(z_ik)),
    z = q·k/sqrt(d), over the valid keys; per pair, as sb_ref.py and the layer's remainder."""
    length = q.shape[1]
    out = np.zeros_like(q, dtype=np.float64)
    for batch in range(B):
        for h in range(H):
            z = q[batch, :, h] @ k[batch, :, h].T / np.sqrt(D_HEAD)
            for i in range(length):
                total = 0.0
                for j in range(i):
                    if not valid[batch, j]:
                        continue
                    keep = np.prod(
                        [1 - _sigmoid(z[i, m]) for m in range(j + 1, i) if valid[batch, m]]
                    )
                    weight = _sigmoid(z[i, j]) * keep
                    out[batch, i, h] += weight * v[batch, j, h]
                    total += weight
                out[batch, i, h] += (1 - total) * v[batch, i, h]
    return out


def _stick_breaking_output(q, k, v, token_mask):
    module = perturbed_encoding("stick_breaking", causal=True, d_model=D_MODEL, num_heads=H)
    context = _context(q.shape[1], token_mask)
    scores = attention_scores(module, jnp.asarray(q), jnp.asarray(k), context, None, 0)
    weights = module.normalise(scores, context, 0)
    mixed = module.attention_output(weights, jnp.asarray(v), None, None, 0)
    return np.asarray(weights), np.asarray(mixed)


@pytest.mark.parametrize("length", [1, 4, 11])
def test_stick_breaking_matches_the_official_reference(length):
    q, k, v, _ = _inputs(length, seed=1)
    token_mask = np.ones((B, length), bool)
    weights, actual = _stick_breaking_output(q, k, v, token_mask)
    np.testing.assert_allclose(
        actual, stick_breaking_reference(q, k, v, token_mask), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)  # remainder on the diagonal
    assert np.all(weights >= 0) and np.all(np.triu(weights, 1) == 0)


def test_stick_breaking_ignores_padding_keys():
    """Padding at the end never claims weight, and the real slots' outputs do not change."""
    q, k, v, _ = _inputs(8, seed=2)
    token_mask = np.ones((B, 8), bool)
    token_mask[1, 5:] = False
    _, padded = _stick_breaking_output(q, k, v, token_mask)
    _, alone = _stick_breaking_output(q[:, :5], k[:, :5], v[:, :5], np.ones((B, 5), bool))
    np.testing.assert_allclose(padded[1, :5], alone[1], rtol=1e-6, atol=1e-6)


def test_stick_breaking_worked_example():
    """Query 2 with zero logits: A_21 = 1/2, A_20 = 1/4, and 1/4 left for v_2 (the docstring)."""
    module = perturbed_encoding("stick_breaking", causal=True, d_model=D_MODEL, num_heads=H)
    context = _context(3)
    weights = np.asarray(module.normalise(jnp.zeros((B, H, 3, 3)), context, 0))
    np.testing.assert_allclose(weights[0, 0, 2], [0.25, 0.5, 0.25], atol=1e-7)
    np.testing.assert_allclose(weights[0, 0, 0], [1.0, 0.0, 0.0], atol=1e-7)


# --- PaTH --------------------------------------------------------------------------------------


def path_reference(module, q, k, x, layer, gated=False):
    """fla's PaTH, per pair with explicit matrices: w = l2norm(silu(conv(x W_down W_up))),
    β = 2σ(x W_β + b_β), H_t = I − β_t w_t w_tᵀ, A_ij = q_iᵀ H_i ⋯ H_{j+1} k_j / sqrt(d)
    (+ the forget-gate term inside the scaling with `gated`)."""
    p = {
        name: np.asarray(getattr(module, name)[layer], np.float64)
        for name in ("w_down", "w_up", "w_conv", "beta_kernel", "beta_bias")
    }
    projected = x @ p["w_down"] @ p["w_up"]  # [B, T, D]
    width, length = p["w_conv"].shape[0], x.shape[1]
    padded = np.concatenate([np.zeros((B, width - 1, D_MODEL)), projected], axis=1)
    conv = np.stack(
        [sum(p["w_conv"][m] * padded[:, t + m] for m in range(width)) for t in range(length)],
        axis=1,
    )
    w = (conv * _sigmoid(conv)).reshape(B, length, H, D_HEAD)
    w = w / np.sqrt((w * w).sum(-1, keepdims=True) + 1e-6)
    beta = 2 * _sigmoid(x @ p["beta_kernel"] + p["beta_bias"])  # [B, T, H]
    if gated:
        gw = np.asarray(module.gates.kernel[layer], np.float64)
        gb = np.asarray(module.gates.bias[layer], np.float64)
        log_f = _log_sigmoid(np.einsum("btm,mh->bth", x, gw) + gb)
    out = np.full((B, H, length, length), np.nan)
    for batch in range(B):
        for h in range(H):
            for i in range(length):
                product = np.eye(D_HEAD)
                for j in range(i, -1, -1):  # product = H_i ⋯ H_{j+1}
                    logit = q[batch, i, h] @ product @ k[batch, j, h]
                    if gated:
                        logit += log_f[batch, j + 1 : i + 1, h].sum()
                    out[batch, h, i, j] = logit / np.sqrt(D_HEAD)
                    u = w[batch, j, h]
                    product = product @ (np.eye(D_HEAD) - beta[batch, j, h] * np.outer(u, u))
    return out


@pytest.mark.parametrize("length, gated", [(1, False), (6, False), (24, False), (9, True)])
def test_path_logits_equal_the_naive_product_of_matrices(length, gated):
    module = perturbed_encoding(
        "path", causal=True, d_model=D_MODEL, num_heads=H, rank=3, forget_gate=gated
    )
    q, k, _, x = _inputs(length, seed=3)
    actual = _scores(module, q, k, x, _context(length))
    expected = path_reference(module, q, k, x, layer=1, gated=gated)
    lower = np.tril(np.ones((length, length), bool))
    np.testing.assert_allclose(actual[..., lower], expected[..., lower], rtol=1e-4, atol=1e-5)


def test_path_stays_exact_at_long_lengths_with_reflections_and_projections():
    """β pushed to 2 (reflections) in one head and to 1 (singular projections) in the other: a
    product that inverting would break. 160 slots, the scan against the matrices in float64."""
    module = perturbed_encoding("path", causal=True, d_model=D_MODEL, num_heads=H, rank=3)
    bias = np.asarray(module.beta_bias[...]).copy()
    bias[:, 0], bias[:, 1] = 12.0, 0.0  # β = 2σ(·): ≈ 2 in head 0, ≈ 1 in head 1
    module.beta_bias[...] = jnp.asarray(bias)
    module.beta_kernel[...] = module.beta_kernel[...] * 0.01
    length = 160
    q, k, _, x = _inputs(length, seed=4)
    actual = _scores(module, q, k, x, _context(length))
    expected = path_reference(module, q, k, x, layer=1)
    lower = np.tril(np.ones((length, length), bool))
    assert np.isfinite(actual[..., lower]).all()
    np.testing.assert_allclose(actual[..., lower], expected[..., lower], rtol=1e-4, atol=1e-4)


def test_path_diagonal_is_the_plain_dot_product():
    module = perturbed_encoding("path", causal=True, d_model=D_MODEL, num_heads=H)
    q, k, _, x = _inputs(7, seed=5)
    actual = _scores(module, q, k, x, _context(7))
    plain = np.einsum("bqhd,bqhd->bhq", q, k) / np.sqrt(D_HEAD)
    np.testing.assert_allclose(np.diagonal(actual, axis1=2, axis2=3), plain, rtol=1e-5, atol=1e-5)


# --- both modes and properties -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["fox", "stick_breaking", "path"])
def test_causal_only_encodings_refuse_an_encoder_and_say_why(encoding):
    with pytest.raises(ConfigError, match=rf"encoding={encoding} is defined for decoders only: "):
        make_settings(f"encoding={encoding}", "model.causal=false")


def _last_slot_output(encoding: str, permutation) -> np.ndarray:
    settings = make_settings(
        f"encoding={encoding}", "task=copy", "model.causal=true", "model.num_layers=1"
    )
    model = build_model(settings, jax.random.key(0))
    length = len(permutation) + 1
    tokens = jax.random.randint(jax.random.key(1), (2, length), 2, settings.task.input_vocab_size)
    order = np.concatenate([permutation, [length - 1]])
    positions = jnp.broadcast_to(jnp.arange(length), (2, length))
    return np.asarray(model(tokens[:, order], positions, jnp.ones((2, length), bool))[:, -1])


@pytest.mark.parametrize("encoding", ["fox", "stick_breaking", "path"])
def test_order_of_earlier_tokens_reaches_the_last_slot(encoding):
    """A one-layer NoPE decoder's last slot sees the earlier tokens as a set: permuting them
    changes nothing (with more layers, earlier slots' own prefixes differ). The data-dependent
    encodings read their order (the slots between key and query)."""
    permutation = np.random.default_rng(0).permutation(9)
    nope_same = _last_slot_output("nope", np.arange(9)), _last_slot_output("nope", permutation)
    np.testing.assert_allclose(*nope_same, rtol=1e-5, atol=1e-5)
    same = _last_slot_output(encoding, np.arange(9)), _last_slot_output(encoding, permutation)
    assert np.max(np.abs(same[0] - same[1])) > 1e-3
