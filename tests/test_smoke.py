"""Every encoding and every task through the path users take (Hydra compose -> Settings ->
training step), in encoder and decoder mode.

Encodings and tasks are paired round-robin, so each pair covers one of each and every name
appears in both modes: 22 pairs per mode instead of 13 × 22. Every pair's training step is
traced (no compilation: `jax.eval_shape`), which builds the whole step, gradient and optimizer
included; every encoding is also compiled and trained for real in one mode, with a finite loss.
Compilation dominates the time of these runs; the full run (evaluation, files) is end-to-end
tested in test_end_to_end.py."""

import math

import jax
import pytest

from posenc_jax import encodings, tasks
from posenc_jax.errors import ConfigError
from posenc_jax.train import abstract_init_state, make_train_chunk, train

from helpers import make_settings, modes, task_for

# The smallest run that still takes real optimizer steps. One layer halves the compile time; every
# encoding's per-layer indexing is checked with two layers by the shift-invariance, permutation
# and reference-value tests.
TINY = [
    "train.steps=2",
    "train.log_every=2",
    "train.steps_per_dispatch=2",
    "train.batch_size=8",
    "model.num_layers=1",
    "model.d_model=16",
    "model.num_heads=2",
]

_ENCODINGS, _TASKS = encodings.available(), tasks.available()
PAIRS = [
    (_ENCODINGS[i % len(_ENCODINGS)], _TASKS[i % len(_TASKS)])
    for i in range(max(len(_ENCODINGS), len(_TASKS)))
]
# One compiled run per encoding, alternating encoder and decoder where the encoding has both,
# on a task it accepts.
RUNS = [
    (encoding, task_for(encoding, task), i % 2 == 1 or modes(encoding) == [True])
    for i, (encoding, task) in enumerate(PAIRS[: len(_ENCODINGS)])
]


def test_pairs_and_runs_cover_every_encoding_and_task_and_both_modes():
    assert {e for e, _ in PAIRS} == set(_ENCODINGS) and {t for _, t in PAIRS} == set(_TASKS)
    assert {e for e, _, _ in RUNS} == set(_ENCODINGS) and {c for *_, c in RUNS} == {False, True}


def _tiny(encoding: str) -> list[str]:
    """TINY, with a one-layer pattern for the hybrid (its default has the default's 2 layers)."""
    return TINY + (["encoding.layers=[alibi]"] if encoding == "hybrid" else [])


def _types(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype, getattr(x, "weak_type", False)), tree)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("encoding, task", PAIRS)
def test_every_encoding_and_task_traces_a_training_step_in_both_modes(encoding, task, causal):
    """The step builds, and gives back the state with the same shapes and dtypes: a parameter
    created weakly typed (e.g. jnp.full of a Python float) would come back from the optimizer
    strongly typed, and the changed input types would compile the step a second time. A pair
    the encoding cannot take (a decoder-only encoding in an encoder, digit roles on a task
    without numbers) is refused instead, and the encoding traces on a task it accepts."""
    overrides = [f"encoding={encoding}", f"task={task}", f"model.causal={causal}", *_tiny(encoding)]
    if causal not in modes(encoding) or task_for(encoding, task) != task:
        with pytest.raises(ConfigError, match=rf"encoding={encoding} "):
            make_settings(*overrides)
        if causal not in modes(encoding):
            return
        overrides[1] = f"task={task_for(encoding, task)}"
    settings = make_settings(*overrides)
    graphdef, state, optimizer = abstract_init_state(settings)
    after, counts = jax.eval_shape(make_train_chunk(settings, graphdef, optimizer, 1), state)
    assert _types(after) == _types(state)
    assert all(field.shape == () for field in counts)  # summed over the batch and the steps


@pytest.mark.parametrize("encoding, task, causal", RUNS)
def test_every_encoding_trains_with_a_finite_loss(encoding, task, causal):
    settings = make_settings(
        f"encoding={encoding}", f"task={task}", f"model.causal={causal}", *_tiny(encoding)
    )
    summary = train(settings, lambda *_: None).summary
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert math.isfinite(summary["final_loss"])
