"""Resuming (issue 14, first part): a run interrupted after a training checkpoint, or before
its first one, or during evaluation, is resumed by running it again into the same folder, and
ends with the results and logs of a run never interrupted (timing aside); a folder holding
another run's settings is refused and left as it was.

The interruption here is an exception raised while logging a chosen step (the process goes on,
so this checks the folder states and the bookkeeping, not a killed process's files)."""

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from posenc_jax import outputs, run_log
from posenc_jax.errors import ConfigError
from posenc_jax.run import run

from helpers import make_settings

TIMING = {"wall_s", "first_dispatch_s", "steps_per_s", "provenance"}


def without_timing(document):
    if isinstance(document, dict):
        return {k: without_timing(v) for k, v in document.items() if k not in TIMING}
    if isinstance(document, list):
        return [without_timing(item) for item in document]
    return document


class Interrupted(Exception):
    pass


def interrupt_at(monkeypatch, step: int, tag: str = "train/loss") -> None:
    """Make the next run stop when it logs `tag` at `step`."""
    original = run_log.RunLog.scalars

    def scalars(self, at, values):
        if at == step and tag in values:
            monkeypatch.setattr(run_log.RunLog, "scalars", original)
            raise Interrupted
        return original(self, at, values)

    monkeypatch.setattr(run_log.RunLog, "scalars", scalars)


def logged_steps(folder: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a TensorBoard scalar as TensorBoard shows it (purged steps dropped)."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def interrupted_and_resumed(monkeypatch, tmp_path, overrides, step, tag="train/loss"):
    """(the resumed run's folder and results, an uninterrupted run's folder and results)."""
    settings = make_settings("task=reverse", "train.steps=40", *overrides)
    interrupt_at(monkeypatch, step, tag)
    with pytest.raises(Interrupted):
        run(settings, tmp_path / "resumed", show_progress=False)
    assert not (tmp_path / "resumed" / outputs.RESULTS_FILE).exists()
    resumed = run(settings, tmp_path / "resumed", show_progress=False)
    alone = run(settings, tmp_path / "alone", show_progress=False)
    return (tmp_path / "resumed", resumed), (tmp_path / "alone", alone)


@pytest.mark.parametrize(
    ("overrides", "step", "logs"),
    [
        # Checkpoints at 10 and 20; stopped while logging 30: resumed from 20.
        (["train.checkpoint_every=10"], 30, ["."]),
        (["train.checkpoint_every=10", "train.num_seeds=2"], 30, [".", "seed_0", "seed_1"]),
        # No checkpoint before the end: resumed from step 0, the logs emptied first.
        (["train.checkpoint_every=null"], 30, ["."]),
    ],
)
def test_an_interrupted_run_resumes_to_the_uninterrupted_results(
    monkeypatch, tmp_path, overrides, step, logs
):
    (resumed_dir, resumed), (alone_dir, alone) = interrupted_and_resumed(
        monkeypatch, tmp_path, overrides, step
    )
    assert without_timing(resumed) == without_timing(alone)
    for log in logs:
        assert (resumed_dir / log / "metrics.jsonl").read_text() == (
            alone_dir / log / "metrics.jsonl"
        ).read_text()
    # TensorBoard shows every training step once, with the uninterrupted run's values.
    log = logs[-1]
    assert logged_steps(resumed_dir / log, "train/loss") == logged_steps(
        alone_dir / log, "train/loss"
    )
    assert [s for s, _ in logged_steps(alone_dir / log, "train/loss")] == [10, 20, 30, 40]


def test_a_run_interrupted_during_evaluation_finishes_on_rerun(monkeypatch, tmp_path):
    """The folder the issue names: trained, parameters saved, no results.json. The rerun
    restores the last checkpoint (the end of training) and evaluates, with nothing trained
    twice and no 'checkpoint already exists' error."""
    (resumed_dir, resumed), (_, alone) = interrupted_and_resumed(
        monkeypatch, tmp_path, [], 40, tag="eval/acc_id"
    )
    assert without_timing(resumed) == without_timing(alone)
    assert resumed["train"]["steps_per_s"] is None  # no step was taken again
    lines = (resumed_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20, 30, 40, 40]


def test_a_folder_holding_another_runs_settings_is_refused_unchanged(monkeypatch, tmp_path):
    settings = make_settings("task=reverse", "train.steps=40", "train.checkpoint_every=10")
    interrupt_at(monkeypatch, 30)
    with pytest.raises(Interrupted):
        run(settings, tmp_path, show_progress=False)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    other = make_settings("task=reverse", "train.steps=40", "seed=1")
    with pytest.raises(ConfigError, match="holds an unfinished run with other settings \\(seed"):
        run(other, tmp_path, show_progress=False)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
