"""xPos: the authors' ζ, a q·k that depends only on n − m, and decay with distance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.encodings import Xpos, apply_rope, rope_frequencies, xpos_zeta

THETA = rope_frequencies(8)


def test_zeta_matches_the_authors_formula():
    np.testing.assert_allclose(xpos_zeta(4), [1.6 / 5.6, 3.6 / 5.6], rtol=1e-6)
    np.testing.assert_allclose(
        xpos_zeta(8), [3.2 / 11.2, 5.2 / 11.2, 7.2 / 11.2, 9.2 / 11.2], rtol=1e-6
    )


def _dot(q, k, n, m, scale_base=512.0, layout="interleaved"):
    spec = Xpos(scale_base=scale_base, layout=layout)
    rq = spec.rotate(q[None, None, None], jnp.array([[n]]), is_query=True)
    rk = spec.rotate(k[None, None, None], jnp.array([[m]]), is_query=False)
    return float(jnp.sum(rq * rk))


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_dot_product_is_rope_scaled_by_zeta_to_the_offset(layout):
    q, k = jax.random.normal(jax.random.key(0), (2, 8))
    n, m = 300, 120
    rq = apply_rope(q[None, None, None], jnp.array([[n]]), THETA, layout)[0, 0, 0]
    rk = apply_rope(k[None, None, None], jnp.array([[m]]), THETA, layout)[0, 0, 0]
    products = rq * rk
    per_pair = (
        products.reshape(4, 2).sum(-1) if layout == "interleaved" else products[:4] + products[4:]
    )
    expected = float(jnp.sum(per_pair * xpos_zeta(8) ** ((n - m) / 512.0)))
    assert _dot(q, k, n, m, layout=layout) == pytest.approx(expected, rel=1e-5)
    assert _dot(q, k, n + 1000, m + 1000, layout=layout) == pytest.approx(expected, rel=1e-4)


def test_every_pair_decays_and_fast_rotating_pairs_decay_fastest():
    # Combined with the exact per-pair factor above, ζ_i < 1 means scores decay with n − m.
    zeta = np.asarray(xpos_zeta(64))
    assert 0 < zeta.min() and zeta.max() < 1
    assert (np.diff(zeta) > 0).all()  # pair 0 rotates fastest and has the smallest ζ


def test_without_decay_it_is_rope():
    q, k = jax.random.normal(jax.random.key(1), (2, 8))

    def rotated(x, p):
        return apply_rope(x[None, None, None], jnp.array([[p]]), THETA)

    rope = jnp.sum(rotated(q, 50) * rotated(k, 7))
    assert _dot(q, k, 50, 7, scale_base=1e12) == pytest.approx(float(rope), rel=1e-5)
