"""Every encoding and every task trains a few steps in encoder and decoder mode, through the path
users take (Hydra compose -> Settings -> train), with a finite loss.

Encodings and tasks are paired round-robin, so each run covers one of each and every name
appears in both modes: 21 runs per mode instead of 13 + 21. Compilation dominates the time of
these runs; the full run (evaluation, files) is end-to-end tested in test_end_to_end.py."""

import math

import pytest

from posenc_jax import encodings, tasks
from posenc_jax.train import train

from helpers import make_settings

# The smallest run that still takes real optimizer steps. One layer halves the compile time; every
# encoding's per-layer indexing is checked with two layers by the shift-invariance, permutation
# and reference-value tests.
TINY = [
    "train.steps=2",
    "train.log_every=2",
    "train.steps_per_dispatch=2",
    "optim.warmup_steps=1",
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


def test_pairs_cover_every_encoding_and_task():
    assert {e for e, _ in PAIRS} == set(_ENCODINGS) and {t for _, t in PAIRS} == set(_TASKS)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("encoding, task", PAIRS)
def test_every_encoding_and_task_trains_in_both_modes(encoding, task, causal):
    settings = make_settings(
        f"encoding={encoding}", f"task={task}", f"model.causal={causal}", *TINY
    )
    summary = train(settings, lambda *_: None).summary
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert math.isfinite(summary["final_loss"])
