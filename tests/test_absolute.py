"""Absolute encodings: sinusoidal closed form, and the learned table's hard limit."""

import math

import jax.numpy as jnp
import numpy as np
from flax import nnx

from posenc_jax.encodings import sinusoidal_table
from posenc_jax.encodings.learned import Learned
from posenc_jax.model_config import ModelConfig


def test_sinusoidal_matches_closed_form():
    dim = 10
    positions = jnp.array([0, 1, 5, 37, 1000])
    table = np.asarray(sinusoidal_table(positions, dim))
    for row, p in enumerate([0, 1, 5, 37, 1000]):
        for i in range(dim // 2):
            angle = p / 10000 ** (2 * i / dim)
            assert abs(table[row, 2 * i] - math.sin(angle)) < 1e-5
            assert abs(table[row, 2 * i + 1] - math.cos(angle)) < 1e-5


def test_sinusoidal_worked_example_from_docstring():
    np.testing.assert_allclose(
        sinusoidal_table(jnp.array([1]), 4)[0], [0.8415, 0.5403, 0.0100, 1.0000], atol=1e-4
    )


def test_learned_table_never_clamps_out_of_range_positions():
    module = Learned(table_size=8).build(ModelConfig(d_model=4, num_heads=1), nnx.Rngs(0))
    x = jnp.zeros((1, 3, 4))
    inside = module.embed(x, jnp.array([[0, 5, 7]]))
    assert np.isfinite(inside).all()
    np.testing.assert_allclose(inside[0, 2], module.table[...][7])
    outside = module.embed(x, jnp.array([[0, 7, 8]]))
    assert np.isnan(outside[0, 2]).all(), "position 8 of an 8-row table must not reuse row 7"
    assert np.isfinite(outside[0, :2]).all()
