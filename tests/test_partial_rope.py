"""Partial rotation (`encoding.fraction`): GPT-J/NeoX partial rotary and p-RoPE, against numpy
re-implementations of the reference code (HF transformers' GPT-NeoX `rotary_ndims` and
`_compute_default_rope_parameters`; GPT-J's interleaved rotary; Gemma's `rope_proportion`)."""

import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.encodings import make_encoding
from posenc_jax.errors import ConfigError

from helpers import make_settings

HEAD_DIM, BASE = 16, 10000.0
POSITIONS = np.array([[0, 3, 7, 40]])


def _x(seed=0):
    return np.random.default_rng(seed).normal(size=(1, 4, 2, HEAD_DIM)).astype(np.float32)


def _rotate(x, **params):
    spec = make_encoding({"name": "rope", **params})
    return np.asarray(spec.rotate(jnp.asarray(x), jnp.asarray(POSITIONS), is_query=True))


def _angles(inverse_frequencies):
    return POSITIONS[0][:, None, None] * inverse_frequencies  # [seq, 1, pairs]


def neox_reference(x, fraction):
    """GPT-NeoX: rotary_ndims = int(head_size · rotary_pct); inv_freq over rotary_ndims;
    rotate_half on the first rotary_ndims dimensions, the rest passed through."""
    r = int(HEAD_DIM * fraction)
    inv = 1.0 / BASE ** (np.arange(0, r, 2) / r)
    cos, sin = np.cos(_angles(inv)), np.sin(_angles(inv))
    x1, x2, rest = x[..., : r // 2], x[..., r // 2 : r], x[..., r:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1)


def gptj_reference(x, fraction):
    """GPT-J: the first rotary_dim dimensions rotated in interleaved pairs (2i, 2i+1)."""
    r = int(HEAD_DIM * fraction)
    inv = 1.0 / BASE ** (np.arange(0, r, 2) / r)
    cos, sin = np.cos(_angles(inv)), np.sin(_angles(inv))
    out = x.copy()
    even, odd = x[..., 0:r:2], x[..., 1:r:2]
    out[..., 0:r:2] = even * cos - odd * sin
    out[..., 1:r:2] = even * sin + odd * cos
    return out


def p_rope_reference(x, fraction):
    """Gemma's proportional RoPE: rope_angles = int(p · head_dim // 2) pairs with timescale
    base^(2i/head_dim), the rest with timescale inf (angle 0); pairs (i, i + d/2)."""
    kept = int(fraction * HEAD_DIM // 2)
    exponents = (2.0 / HEAD_DIM) * np.arange(kept)
    timescale = np.concatenate([BASE**exponents, np.full(HEAD_DIM // 2 - kept, np.inf)])
    angles = POSITIONS[0][:, None, None] / timescale
    first, second = np.split(x, 2, axis=-1)
    cos, sin = np.cos(angles), np.sin(angles)
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_neox_partial_rotary_matches_gpt_neox(fraction):
    x = _x()
    actual = _rotate(x, fraction=fraction, partial="neox", layout="half")
    np.testing.assert_allclose(actual, neox_reference(x, fraction), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_interleaved_partial_rotary_matches_gpt_j(fraction):
    x = _x(1)
    actual = _rotate(x, fraction=fraction, partial="neox", layout="interleaved")
    np.testing.assert_allclose(actual, gptj_reference(x, fraction), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.8])
def test_p_rope_matches_gemma_proportional_rope(fraction):
    x = _x(2)
    actual = _rotate(x, fraction=fraction, partial="p_rope", layout="half")
    np.testing.assert_allclose(actual, p_rope_reference(x, fraction), rtol=1e-5, atol=1e-5)


def test_each_rule_keeps_the_pairs_it_documents():
    """neox: dimensions past int(f·d) untouched; p_rope: the slowest d/2 − K pairs untouched
    (both dimensions of each), the fastest K turned."""
    x = _x(3)
    neox = _rotate(x, fraction=0.25, partial="neox", layout="half")
    np.testing.assert_array_equal(neox[..., 4:], x[..., 4:])
    assert np.abs(neox[0, 1:, :, :4] - x[0, 1:, :, :4]).max() > 1e-2
    p_rope = _rotate(x, fraction=0.25, partial="p_rope", layout="interleaved")
    np.testing.assert_array_equal(p_rope[..., 4:], x[..., 4:])  # pairs 2..7 = dims 4..15
    assert np.abs(p_rope[0, 1:, :, :4] - x[0, 1:, :, :4]).max() > 1e-2


def test_full_fraction_is_rope_bit_for_bit():
    x = _x(4)
    for partial in ("neox", "p_rope"):
        np.testing.assert_array_equal(_rotate(x, fraction=1.0, partial=partial), _rotate(x))


@pytest.mark.parametrize("partial", ["neox", "p_rope"])
def test_partial_rotation_keeps_logits_relative(partial):
    """q·k still depends on m − n only: shifting both positions by 100 changes nothing."""
    spec = make_encoding({"name": "rope", "fraction": 0.5, "partial": partial})
    q, k = jnp.asarray(_x(5)), jnp.asarray(_x(6))

    def logits(shift):
        positions = jnp.asarray(POSITIONS + shift)
        return np.einsum(
            "bqhd,bkhd->bhqk",
            spec.rotate(q, positions, True),
            spec.rotate(k, positions, False),
        )

    np.testing.assert_allclose(logits(100), logits(0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["encoding.fraction=0"], r"encoding.fraction=0.0 must be in \(0, 1\]"),
        (["encoding.fraction=1.5"], r"encoding.fraction=1.5 must be in \(0, 1\]"),
        (["encoding.fraction=nan"], r"encoding.fraction=nan must be in \(0, 1\]"),
        (
            ["encoding.fraction=0.1"],
            r"rotates int\(0.1·16\) = 1 dimensions, but rotation needs an even number of at "
            r"least 2. For head_dim 16 choose one of \['0.125', '0.25',",
        ),
        (
            ["encoding.fraction=0.1", "encoding.partial=p_rope"],
            r"keeps int\(0.1·16 // 2\) = 0 pairs.*encoding.fraction >= 0.125, or encoding=nope",
        ),
        (
            ["encoding.fraction=0.5", "encoding.partial=p_rope", "encoding.scaling=pi"],
            r"no reference defines context extension for p-RoPE",
        ),
        (["encoding.partial=half"], r"encoding.partial='half'.*\['neox', 'p_rope'\]"),
    ],
)
def test_bad_fractions_are_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_settings("encoding=rope", "model.d_model=64", *overrides)


def test_a_fraction_that_rounds_to_an_even_dimension_is_accepted():
    spec = make_settings("encoding=rope", "encoding.fraction=0.3", "model.d_model=64").encoding
    assert spec.rotary_dim(HEAD_DIM) == 4  # int(0.3 · 16) = int(4.8), as GPT-NeoX rounds


def test_xpos_refuses_partial_rotation():
    """xpos.yaml has no `fraction` (Hydra refuses the key); the spec refuses it too."""
    spec = make_encoding({"name": "xpos", "fraction": 0.5})
    with pytest.raises(ConfigError, match=r"encoding.fraction=0.5: xPos scales every"):
        spec.validate(make_settings().model)
