"""Relative encodings see only differences of positions: shifting every position changes nothing.
Absolute encodings see positions themselves, so a shift changes the outputs.

CoPE reads no positions at all (unchanged); FIRE is relative while positions stay below its
threshold L = 512, which a shift by 37 respects (past L it is not: see test_relative_encodings).
Encoding parameters are perturbed first, so the property is not an accident of initialisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.encodings import REGISTRY, available
from posenc_jax.model import build_model

from helpers import make_settings, modes, perturb_parameters, task_for


def _outputs(encoding, causal, shift):
    task = task_for(encoding, "copy")
    settings = make_settings(f"encoding={encoding}", f"task={task}", f"model.causal={causal}")
    model = build_model(settings, jax.random.key(0))
    perturb_parameters(model.encoding)
    tokens = jax.random.randint(jax.random.key(1), (2, 10), 2, settings.task.input_vocab_size)
    positions = jnp.broadcast_to(jnp.arange(10) + shift, (2, 10))
    return np.asarray(model(tokens, positions, jnp.ones((2, 10), bool)))


@pytest.mark.parametrize(
    "encoding, causal", [(name, causal) for name in available() for causal in modes(name)]
)
def test_shifting_all_positions(encoding, causal):
    base, shifted = _outputs(encoding, causal, 0), _outputs(encoding, causal, 37)
    if REGISTRY[encoding].family == "absolute":
        assert np.max(np.abs(base - shifted)) > 1e-3
    else:
        np.testing.assert_allclose(shifted, base, rtol=1e-4, atol=1e-4)
