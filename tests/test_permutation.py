"""An encoder without positions cannot see order: NoPE is permutation-equivariant, and every
positional encoding breaks that symmetry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.encodings import available
from posenc_jax.model import build_model

from helpers import make_settings, modes, perturb_parameters, task_for

LENGTH = 12


def _outputs_and_permuted(encoding: str):
    settings = make_settings(f"encoding={encoding}", f"task={task_for(encoding, 'copy')}")
    model = build_model(settings, jax.random.key(0))
    perturb_parameters(model.encoding)
    tokens = jax.random.randint(jax.random.key(1), (2, LENGTH), 2, settings.task.input_vocab_size)
    positions = jnp.broadcast_to(jnp.arange(LENGTH), (2, LENGTH))
    mask = jnp.ones((2, LENGTH), bool)
    perm = np.random.default_rng(0).permutation(LENGTH)
    out = model(tokens, positions, mask)
    out_of_permuted = model(tokens[:, perm], positions, mask)  # positions stay 0..T-1
    return np.asarray(out[:, perm]), np.asarray(out_of_permuted)


def test_nope_encoder_is_permutation_equivariant():
    expected, actual = _outputs_and_permuted("nope")
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


# In an encoder; the decoder-only encodings (FoX, stick-breaking, PaTH) break the decoder's
# version of the symmetry instead (test_data_dependent.py).
@pytest.mark.parametrize(
    "encoding", [name for name in available() if name != "nope" and False in modes(name)]
)
def test_positional_encodings_break_permutation_equivariance(encoding):
    expected, actual = _outputs_and_permuted(encoding)
    assert np.max(np.abs(actual - expected)) > 1e-3
