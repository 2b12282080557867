"""Numerical faults: the first step whose loss or gradient is not finite is found on the device
and named; the run stops with status "diverged" and its partial history, and keeps its last
good checkpoint (no checkpoint of a diverged state is written)."""

import json

import jax
import numpy as np
import pytest

from posenc_jax.checkpoint import TrainingCheckpoints
from posenc_jax.run import run
from posenc_jax.train import Preempted

from helpers import make_settings, stop_requested_at_ask


@pytest.mark.parametrize(
    ("overrides", "first_nonfinite", "checkpoints"),
    [
        # The case: diverges at step 4, before any checkpoint.
        (["optim.learning_rate=1e6"], 4, []),
        # Warm-up delays it to step 21: the checkpoints of steps 10 and 20 are good and kept.
        (["optim.learning_rate=1e3", "optim.warmup_steps=30"], 21, [10, 20]),
    ],
)
def test_a_diverged_run_names_its_step_and_keeps_its_good_checkpoints(
    tmp_path, capsys, overrides, first_nonfinite, checkpoints
):
    settings = make_settings(
        "task=reverse", "train.steps=40", "train.checkpoint_every=10", *overrides
    )
    results = run(settings, tmp_path, show_progress=False)
    assert results["status"] == "diverged" and results["eval"] is None
    assert results["train"]["first_nonfinite_step"] == first_nonfinite
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "diverged"
    assert f"seed 0 at step {first_nonfinite})" in capsys.readouterr().out
    # The partial history: every log step up to the one that found it.
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    found_at = -(-first_nonfinite // 10) * 10
    assert [line["step"] for line in logged] == list(range(10, found_at + 1, 10))
    kept = sorted(int(p.name) for p in (tmp_path / "train_state").iterdir())
    assert kept == checkpoints
    if checkpoints:
        state, _, _ = TrainingCheckpoints(tmp_path, 2).latest(settings)
        assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(state.params))
        assert int(state.first_nonfinite_step) == 0


def test_a_stop_after_an_unnoticed_divergence_saves_nothing_and_keeps_the_good_checkpoint(
    tmp_path, monkeypatch
):
    """SIGTERM at step 25: the loss stopped being finite at 21, which the log step 30 would
    have found. Saving that state would make checkpoints_to_keep=1 delete the good checkpoint
    of step 20; instead nothing is saved, and the rerun from 20 diverges at 21 as before."""
    overrides = ["optim.learning_rate=1e3", "optim.warmup_steps=30"]
    settings = make_settings(
        "task=reverse",
        "train.steps=40",
        "train.checkpoint_every=10",
        "train.checkpoints_to_keep=1",
        *overrides,
    )
    stop_requested_at_ask(monkeypatch, 4)  # asked after steps 5, 10, 15, 20, 25, ...
    with pytest.raises(Preempted, match="stopped at step 25; resumes from step 20"):
        run(settings, tmp_path, show_progress=False)
    monkeypatch.undo()
    assert sorted(int(p.name) for p in (tmp_path / "train_state").iterdir()) == [20]
    results = run(settings, tmp_path, show_progress=False)
    assert results["status"] == "diverged"
    assert sorted(int(p.name) for p in (tmp_path / "train_state").iterdir()) == [20]
