"""Every encoding at the largest positions its settings accept: finite outputs, and the same
outputs as at small positions for every encoding that claims to be relative.

The settings accept encoding.max_position up to 2^24 (the last integer float32 holds exactly);
xPos only up to its finite span (24 521 at the defaults), past which ζ^(±Δ/B) leaves float32;
a learned table only its rows. Rotary and sinusoidal relative encodings turn positions into
angles from each example's first position, so a shift of every position changes nothing at
all (without that, Transformer-XL's logits moved by 3e-3 at position 16 384, and xPos gave NaN
past about 36 000)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.encodings import REGISTRY, available
from posenc_jax.encodings.base import MAX_POSITION
from posenc_jax.errors import ConfigError
from posenc_jax.model import build_model

from helpers import make_settings, modes, perturb_parameters, task_for

LENGTH = 10


def _largest_position(settings) -> int:
    """The largest position these settings accept: the encoding's own limit, else 2^24 − 1."""
    limit = settings.encoding.num_positions
    return (MAX_POSITION if limit is None else limit) - 1


def _outputs(settings, positions):
    model = build_model(settings, jax.random.key(0))
    perturb_parameters(model.encoding)
    tokens = jax.random.randint(jax.random.key(1), (2, LENGTH), 2, settings.task.input_vocab_size)
    positions = jnp.broadcast_to(jnp.asarray(positions, jnp.int32), (2, LENGTH))
    return np.asarray(model(tokens, positions, jnp.ones((2, LENGTH), bool)))


@pytest.mark.parametrize(
    "encoding, causal", [(name, causal) for name in available() for causal in modes(name)]
)
def test_the_largest_accepted_positions_give_finite_and_shift_invariant_outputs(encoding, causal):
    task = task_for(encoding, "copy")
    settings = make_settings(f"encoding={encoding}", f"task={task}", f"model.causal={causal}")
    top = _largest_position(settings)
    near, far = (
        _outputs(settings, np.arange(LENGTH)),
        _outputs(settings, top - LENGTH + 1 + np.arange(LENGTH)),
    )
    assert np.isfinite(far).all()
    # FIRE is relative only below its threshold L: past it the normaliser grows with the query.
    if REGISTRY[encoding].family not in ("absolute",) and encoding != "fire":
        np.testing.assert_allclose(far, near, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_xpos_is_finite_across_its_whole_span(causal):
    settings = make_settings("encoding=xpos", "task=copy", f"model.causal={causal}")
    span = settings.encoding.finite_span
    assert span == 24521  # 60 · 512 / |ln(0.4 / 1.4)|
    positions = np.linspace(0, span - 1, LENGTH).astype(int)  # first and last 24 520 apart
    assert np.isfinite(_outputs(settings, positions)).all()


def test_positions_past_what_an_encoding_can_hold_are_refused():
    with pytest.raises(ConfigError, match=r"encoding.max_position=65536 is more than xPos can"):
        make_settings("encoding=xpos", "encoding.randomized=true", "encoding.max_position=65536")
    with pytest.raises(ConfigError, match=r"encoding.max_position=16777217 is past 16777216"):
        make_settings("encoding.randomized=true", "encoding.max_position=16777217")
    # Evaluation lengths past xPos's span are reported as not representable, not run.
    xpos = make_settings("encoding=xpos").encoding
    assert xpos.represents(24521) and not xpos.represents(24522)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["encoding.gamma=1e20"], r"encoding.gamma=1e\+20 gives ζ_0 = .* needs 0 < ζ_0 < 1"),
        (["encoding.gamma=1e-50"], r"encoding.gamma=1e-50 gives ζ_0"),
        (["encoding.gamma=inf"], r"must both be positive and finite"),
        (["encoding.scale_base=inf"], r"must both be positive and finite"),
        (["encoding.scale_base=0.001"], r"encoding.scale_base=0.001 is too small"),
        (["encoding.scaling=pi", "encoding.scale=inf"], r"encoding.scale=inf must be finite"),
    ],
)
def test_xpos_constants_that_float32_cannot_hold_are_refused(overrides, message):
    """Each passed the old checks and then crashed (ZeroDivisionError, OverflowError) or
    diverged (ζ_0 flushed to 0), or, for an infinite scale, turned RoPE into NoPE silently."""
    with pytest.raises(ConfigError, match=message):
        make_settings("encoding=xpos", *overrides)
