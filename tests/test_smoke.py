"""Every encoding trains a few steps in encoder and decoder mode, through the path users take
(Hydra compose -> Settings -> run), with a finite loss and a full results.json."""

import math

import pytest

from posenc_jax.encodings import available
from posenc_jax.run import run

from conftest import make_settings

# One layer halves the compile time, which dominates here; every encoding's per-layer indexing
# is checked with two layers by the shift-invariance, permutation and reference-value tests.
TINY = ["train.steps=4", "train.log_every=2", "train.steps_per_dispatch=2",
        "optim.warmup_steps=1", "eval.max_len=6", "model.num_layers=1"]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("encoding", available())
def test_every_encoding_trains_in_both_modes(encoding, causal, tmp_path):
    settings = make_settings(f"encoding={encoding}", "task=reverse", f"model.causal={causal}", *TINY)
    results = run(settings, tmp_path, show_progress=False)
    assert results["status"] == "completed"
    assert math.isfinite(results["train"]["final_loss"])
    assert all(a is not None for a in results["eval"]["token_acc"])
