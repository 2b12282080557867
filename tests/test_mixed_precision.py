"""train.dtype=bfloat16: the matmuls take bf16 inputs; parameters, optimizer state, norms, softmax
and the loss stay float32; RoPE's angles stay float32 at every position."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from posenc_jax import metrics
from posenc_jax.encodings.rope import apply_rope
from posenc_jax.encodings.rope_scaling import rope_frequencies
from posenc_jax.train import init_state, make_train_chunk, training_batches

from helpers import make_settings


def loss_equations(settings):
    """Every equation of the loss's jaxpr (nested ones included) for one training batch."""
    graphdef, state, _ = init_state(settings)
    (batch,) = training_batches(settings, state.data_key, np.int32(0))

    def loss(params):
        model = nnx.merge(graphdef, params)
        counts = metrics.count(model(batch.inputs, batch.positions, batch.token_mask), batch)
        return counts.nll.sum() / counts.scored.sum()

    jaxpr = jax.make_jaxpr(loss)(state.params)
    return [eqn for sub in _all_jaxprs(jaxpr.jaxpr) for eqn in sub.eqns]


def _all_jaxprs(jaxpr):
    yield jaxpr
    for eqn in jaxpr.eqns:
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                yield from _all_jaxprs(inner)


@pytest.mark.parametrize("encoding", ["rope", "nope", "t5"])
def test_every_model_matmul_takes_bf16_inputs(encoding):
    settings = make_settings(f"encoding={encoding}", "task=reverse", "train.dtype=bfloat16")
    dots = [e for e in loss_equations(settings) if e.primitive.name == "dot_general"]
    layers = settings.model.num_layers
    # Per layer: the q, k and v projections, scores, weighted values, output projection, MLP up
    # and down; then the output head.
    assert len(dots) == 8 * layers + 1
    for dot in dots:
        assert [v.aval.dtype for v in dot.invars] == [jnp.bfloat16] * 2, dot


def test_norms_softmax_and_loss_stay_float32():
    settings = make_settings("task=reverse", "train.dtype=bfloat16")
    equations = loss_equations(settings)
    # The softmax's and log-softmax's exponentials, and the norms' reciprocal square roots.
    for name in ("exp", "rsqrt"):
        found = [e for e in equations if e.primitive.name == name]
        assert found and all(e.invars[0].aval.dtype == jnp.float32 for e in found), name


def test_float32_runs_have_no_bf16_anywhere():
    equations = loss_equations(make_settings("task=reverse"))
    assert all(
        v.aval.dtype != jnp.bfloat16
        for e in equations
        for v in e.outvars
        if hasattr(v.aval, "dtype")
    )


def test_parameters_and_optimizer_state_stay_float32_while_training():
    settings = make_settings("task=reverse", "train.dtype=bfloat16")
    graphdef, state, optimizer = init_state(settings)
    state, counts = make_train_chunk(settings, graphdef, optimizer, 5)(state)
    floats = [
        leaf
        for leaf in jax.tree.leaves((state.params, state.opt_state))
        if jnp.issubdtype(leaf.dtype, jnp.floating)
    ]
    assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)
    assert np.isfinite(float(counts.nll)) and counts.nll.dtype == jnp.float32


@pytest.mark.parametrize("position", [7, 1_000, 65_537, 2**20 + 3])
def test_rope_angles_stay_float32_at_every_position(position):
    """A bf16 query rotated at a far position equals the float32 rotation of the same values,
    rounded once to bf16. An angle computed in bf16 would be off by whole radians there (bf16
    keeps 8 significant bits: at 2^20 its spacing is 4096)."""
    q = jax.random.normal(jax.random.key(0), (1, 1, 2, 16)).astype(jnp.bfloat16)
    positions = jnp.array([[position]], jnp.int32)
    frequencies = rope_frequencies(16, 10000.0)
    rotated = apply_rope(q, positions, frequencies)
    assert rotated.dtype == jnp.bfloat16
    angles = np.float64(position) * np.asarray(frequencies, np.float64)
    x = np.asarray(q, np.float64)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    expected = np.stack(
        [x1 * np.cos(angles) - x2 * np.sin(angles), x1 * np.sin(angles) + x2 * np.cos(angles)],
        axis=-1,
    ).reshape(x.shape)
    # bf16's rounding of the result (2^-8 relative), plus float32's error in the angle itself
    # (about position × 2^-24 radians).
    tolerance = 2**-8 * np.abs(expected).max() + position * 2**-24 * np.abs(x).max() * 2
    np.testing.assert_allclose(np.asarray(rotated, np.float64), expected, atol=tolerance)
