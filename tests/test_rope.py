"""RoPE: relative-position property, norm preservation, the two layouts, and bad head dims."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.encodings import apply_rope, rope_frequencies
from posenc_jax.errors import ConfigError

from helpers import make_settings

HEAD_DIM = 16
THETA = rope_frequencies(HEAD_DIM)


def _rotated_dot(q, k, m, n, layout):
    """<R(m) q, R(n) k> for single vectors q, k [head_dim]."""
    rq = apply_rope(q[None, None, None, :], jnp.array([[m]]), THETA, layout=layout)
    rk = apply_rope(k[None, None, None, :], jnp.array([[n]]), THETA, layout=layout)
    return float(jnp.sum(rq * rk))


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_dot_product_depends_only_on_offset(layout):
    rng = np.random.default_rng(0)
    for _ in range(10):
        q, k = jnp.asarray(rng.normal(size=(2, HEAD_DIM)), jnp.float32)
        m, n = rng.integers(0, 500, size=2)
        shift = int(rng.integers(-300, 300))
        shift = max(shift, -int(min(m, n)))  # keep positions non-negative
        base = _rotated_dot(q, k, m, n, layout)
        shifted = _rotated_dot(q, k, m + shift, n + shift, layout)
        assert shifted == pytest.approx(base, rel=1e-4, abs=1e-4)
    # ...and it does depend on the offset (the check above is not vacuous).
    assert abs(_rotated_dot(q, k, 0, 1, layout) - _rotated_dot(q, k, 0, 7, layout)) > 1e-3


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_rotation_preserves_norms(layout):
    x = jax.random.normal(jax.random.key(1), (3, 20, 4, HEAD_DIM))
    positions = jax.random.randint(jax.random.key(2), (3, 20), 0, 4096)
    rotated = apply_rope(x, positions, THETA, layout=layout)
    np.testing.assert_allclose(
        jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5
    )
    assert not np.allclose(rotated, x)


def test_layouts_agree_up_to_fixed_permutation():
    # interleaved pair i = dims (2i, 2i+1); half pair i = dims (i, i + d/2)
    half = HEAD_DIM // 2
    perm = np.stack([np.arange(half), np.arange(half) + half], axis=-1).reshape(-1)
    x = jax.random.normal(jax.random.key(3), (2, 9, 3, HEAD_DIM))
    positions = jnp.broadcast_to(jnp.arange(9) * 13, (2, 9))
    np.testing.assert_allclose(
        apply_rope(x[..., perm], positions, THETA, layout="interleaved"),
        apply_rope(x, positions, THETA, layout="half")[..., perm],
        rtol=1e-5,
        atol=1e-6,
    )


def test_rotation_matches_closed_form_for_one_pair():
    # Position 3, first pair (theta_0 = 1): (1, 0) -> (cos 3, sin 3).
    x = jnp.zeros((1, 1, 1, 4)).at[..., 0].set(1.0)
    out = apply_rope(x, jnp.array([[3]]), rope_frequencies(4))
    np.testing.assert_allclose(out[0, 0, 0], [np.cos(3), np.sin(3), 0, 0], atol=1e-6)
    np.testing.assert_allclose(rope_frequencies(4), [1.0, 0.01], rtol=1e-6)


def test_odd_head_dim_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"head dimension is odd.*d_model=36.*num_heads=4.*= 9"):
        make_settings("encoding=rope", "model.d_model=36", "model.num_heads=4")


def test_unknown_layout_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"layout='diagonal'.*\['interleaved', 'half'\]"):
        make_settings("encoding=rope", "encoding.layout=diagonal")
