"""Resuming (issue 14, first part): a run interrupted after a training checkpoint, or before
its first one, or during evaluation, is resumed by running it again into the same folder, and
ends with the results and logs of a run never interrupted (timing aside); a folder holding
another run's settings is refused and left as it was.

The first tests interrupt a run with an exception raised while logging a chosen step (the
process goes on: they check the folder states and the bookkeeping); the last ones send
posenc-train SIGTERM or SIGKILL once its first checkpoint is on disk."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from posenc_jax import cli, outputs, run_log
from posenc_jax import run as run_module
from posenc_jax.cli import main
from posenc_jax.errors import ConfigError
from posenc_jax.run import run
from posenc_jax.train import Preempted

from helpers import (
    FAST,
    make_settings,
    posenc_train,
    run_in_process,
    stop_requested_at_ask,
    without_timing,
)


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


def test_a_stop_between_log_steps_resumes_with_the_counts_since_the_last_log(monkeypatch, tmp_path):
    """A stop request (SIGTERM) is honoured after the chunk that ends at step 15, between the
    log steps 10 and 20: the checkpoint carries the counts of steps 11-15, so the resumed log
    of step 20 is the uninterrupted one."""
    stop_requested_at_ask(monkeypatch, 2)  # asked after steps 5, 10, 15, ...
    settings = make_settings("task=reverse", "train.steps=40")
    with pytest.raises(Preempted, match="stopped at step 15"):
        run(settings, tmp_path / "resumed", show_progress=False)
    monkeypatch.undo()
    resumed = run(settings, tmp_path / "resumed", show_progress=False)
    alone = run(settings, tmp_path / "alone", show_progress=False)
    assert without_timing(resumed) == without_timing(alone)
    assert (tmp_path / "resumed" / "metrics.jsonl").read_text() == (
        tmp_path / "alone" / "metrics.jsonl"
    ).read_text()


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
    other = make_settings("task=reverse", "train.steps=40", "train.checkpoint_every=10", "seed=1")
    with pytest.raises(
        ConfigError,
        match=r"holds an unfinished run with other settings \(seed differs\).*overwrite=true",
    ):
        run(other, tmp_path, show_progress=False)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


# A run long enough to be stopped between its first checkpoint and its end.
KILLABLE = [
    "task=reverse",
    "model.d_model=32",
    "task.train_max_len=6",
    "eval.max_len=12",
    "eval.examples_per_length=16",
    "train.batch_size=16",
    "train.steps=3000",
    "train.log_every=10",
    "train.steps_per_dispatch=5",
    "train.checkpoint_every=100",
]


def complete_checkpoints(run_dir: Path) -> list[int]:
    """The steps of the training checkpoints orbax has finished (a finished one is renamed to
    its step; one still being written has a temporary name)."""
    folder = run_dir / "train_state"
    return (
        sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit()) if folder.is_dir() else []
    )


def saves_under_way(run_dir: Path) -> list[Path]:
    """Saves orbax has begun and not committed: still under its temporary name."""
    folder = run_dir / "train_state"
    return list(folder.glob("*.orbax-checkpoint-tmp*")) if folder.is_dir() else []


def state_written_not_committed(run_dir: Path) -> bool:
    """A save after the first, its train state already written, not yet renamed to its step:
    a kill now leaves what looks like a whole checkpoint under the temporary name."""
    return bool(complete_checkpoints(run_dir)) and any(
        any((save / "state").rglob("*")) for save in saves_under_way(run_dir)
    )


def start_and_signal(
    run_dir: Path,
    sig: signal.Signals,
    overrides: list[str] = KILLABLE,
    ready: Callable[[Path], bool] = lambda run_dir: bool(complete_checkpoints(run_dir)),
) -> subprocess.CompletedProcess:
    """posenc-train `overrides` into run_dir, sent `sig` as soon as `ready(run_dir)` (by
    default: once its first checkpoint is complete)."""
    command = [sys.executable, "-m", "posenc_jax", *overrides, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not ready(run_dir) and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it was ready to be signalled"
        time.sleep(0.001)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    return folder, run(make_settings(*KILLABLE, fast=False), folder, show_progress=False)


def resume_and_compare(
    run_dir: Path, uninterrupted, overrides: list[str] = KILLABLE, logs: tuple[str, ...] = (".",)
) -> None:
    """Rerun `overrides` into run_dir: it resumes, and ends with the uninterrupted run's
    results (timing aside), metrics.jsonl and TensorBoard steps in every log folder."""
    again = posenc_train(*overrides, f"hydra.run.dir={run_dir}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Resuming" in again.stdout
    folder, results = uninterrupted
    written = json.loads((run_dir / outputs.RESULTS_FILE).read_text())
    assert without_timing(written) == without_timing(results)
    for log in logs:
        assert (run_dir / log / "metrics.jsonl").read_text() == (
            folder / log / "metrics.jsonl"
        ).read_text()
    log = logs[-1]  # the folder with the training curves
    assert logged_steps(run_dir / log, "train/loss") == logged_steps(folder / log, "train/loss")


def test_sigterm_saves_a_checkpoint_and_exits_then_the_rerun_completes(tmp_path, uninterrupted):
    stopped = start_and_signal(tmp_path / "run", signal.SIGTERM)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    found = re.search(
        r"stopped by SIGTERM at step (\d+); a rerun resumes from the checkpoint "
        r"of step (\d+)",
        stopped.stderr,
    )
    assert found and found[1] == found[2], stopped.stderr[-2000:]
    step = int(found[1])
    assert 0 < step < 3000 and complete_checkpoints(tmp_path / "run")[-1] == step
    resume_and_compare(tmp_path / "run", uninterrupted)


def test_sigkill_after_a_checkpoint_and_a_save_cut_short_then_the_rerun_completes(
    tmp_path, uninterrupted
):
    """SIGKILL gives no chance to save: the rerun starts from the newest complete checkpoint.
    A save cut short by the kill is left under orbax's temporary name; one is planted here,
    for a later step with a truncated file, and the rerun ignores it."""
    killed = start_and_signal(tmp_path / "run", signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    first = complete_checkpoints(tmp_path / "run")[-1]
    partial = tmp_path / "run" / "train_state" / f"{first + 100}.orbax-checkpoint-tmp-1"
    shutil.copytree(tmp_path / "run" / "train_state" / str(first), partial)
    for file in partial.rglob("*"):
        if file.is_file():
            file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2])
    resume_and_compare(tmp_path / "run", uninterrupted)


KILLABLE_SEEDS = [*KILLABLE, "train.num_seeds=2"]


@pytest.fixture(scope="module")
def uninterrupted_seeds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted_seeds")
    return folder, run(make_settings(*KILLABLE_SEEDS, fast=False), folder, show_progress=False)


def test_sigkill_inside_a_save_with_seeds_as_a_batch_axis_then_the_rerun_completes(
    tmp_path, uninterrupted_seeds
):
    """A real kill during orbax's save of a vmapped two-seed run: once the save's train state
    is written and before orbax commits it by renaming it to its step. The rerun resumes from
    the newest committed checkpoint and ignores the uncommitted one, which looks whole. The
    kill must land before the rename; a kill that came too late is tried again (at most 3)."""
    for attempt in range(3):
        run_dir = tmp_path / f"attempt{attempt}"
        killed = start_and_signal(
            run_dir, signal.SIGKILL, KILLABLE_SEEDS, state_written_not_committed
        )
        assert killed.returncode == -signal.SIGKILL
        if saves_under_way(run_dir):
            break
    else:
        pytest.fail("three kills all came after the save was committed")
    resume_and_compare(run_dir, uninterrupted_seeds, KILLABLE_SEEDS, (".", "seed_0", "seed_1"))


def interrupted_folder(monkeypatch, tmp_path, *overrides) -> Path:
    """An unfinished run folder with checkpoints at steps 10 and 20."""
    settings = make_settings(
        "task=reverse", "train.steps=40", "train.checkpoint_every=10", *overrides
    )
    interrupt_at(monkeypatch, 30)
    with pytest.raises(Interrupted):
        run(settings, tmp_path, show_progress=False)
    return tmp_path


def files_of(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def corrupt(folder: Path) -> None:
    for file in (folder / "train_state" / "20").rglob("*"):
        if file.is_file():
            file.write_bytes(b"not a checkpoint")


def flipped(folder: Path) -> None:
    """One byte changed in the middle of each data file: orbax may read other numbers back
    without an error; the state's digest catches it."""
    for file in (folder / "train_state" / "20" / "state").rglob("*/d/*"):
        data = bytearray(file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        file.write_bytes(bytes(data))


def undigested(folder: Path) -> None:
    """The digest removed from the progress record, and a byte of the state changed."""
    record = folder / "train_state" / "20" / "progress" / "metadata"
    progress = json.loads(record.read_text())
    del progress["sha256"]
    record.write_text(json.dumps(progress))
    flipped(folder)


def moved_log_position(folder: Path) -> None:
    """A log position edited: resuming would cut metrics.jsonl mid-line."""
    record = folder / "train_state" / "20" / "progress" / "metadata"
    progress = json.loads(record.read_text())
    progress["logs"][0][1] -= 7
    record.write_text(json.dumps(progress))


def other_seeds(folder: Path) -> None:
    """The checkpoints of the same command with seed=1: whole, and digest-true."""
    other = interrupted_folder(pytest.MonkeyPatch(), folder.parent / "other", "seed=1")
    shutil.rmtree(folder / "train_state")
    shutil.copytree(other / "train_state", folder / "train_state")


def foreign(folder: Path) -> None:
    """Put another model's checkpoints (d_model 16 instead of 32) in place of the run's."""
    other = interrupted_folder(pytest.MonkeyPatch(), folder.parent / "other", "model.d_model=16")
    shutil.rmtree(folder / "train_state")
    shutil.copytree(other / "train_state", folder / "train_state")


@pytest.mark.parametrize(
    "damage", [corrupt, flipped, undigested, moved_log_position, other_seeds, foreign]
)
def test_an_unreadable_checkpoint_is_refused_before_training_and_changes_nothing(
    monkeypatch, tmp_path, damage
):
    """Through posenc-train, in its own process: a failed orbax restore leaves asyncio tasks
    whose later clean-up reports "Event loop is closed", which must not reach other tests."""
    overrides = ["task=reverse", "train.steps=40", "train.checkpoint_every=10"]
    folder = interrupted_folder(monkeypatch, tmp_path / "run")
    damage(folder)
    before = files_of(folder)
    refused = posenc_train(*FAST, *overrides, f"hydra.run.dir={folder}")
    assert refused.returncode == 2
    assert re.search(
        r"The newest training checkpoint in .*train_state cannot be read as this run's",
        refused.stderr,
    )
    assert files_of(folder) == before


def test_a_config_that_is_not_a_runs_is_refused(tmp_path):
    (tmp_path / "config.yaml").write_text("[unclosed")
    with pytest.raises(ConfigError, match="is not a run's config"):
        run(make_settings("task=reverse"), tmp_path, show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_overwrite_starts_a_finished_run_over_and_keeps_other_files(tmp_path):
    first = run(make_settings("task=reverse", "seed=1"), tmp_path, show_progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    again = run(make_settings("task=reverse"), tmp_path, show_progress=False, overwrite=True)
    alone = run(make_settings("task=reverse"), tmp_path / "alone", show_progress=False)
    assert without_timing(again) == without_timing(alone) != without_timing(first)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    # the old run's event files are gone
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == len(
        list((tmp_path / "alone").glob("events.out.tfevents.*"))
    )
    assert (tmp_path / "metrics.jsonl").read_text() == (
        tmp_path / "alone" / "metrics.jsonl"
    ).read_text()


def test_overwrite_must_be_a_boolean(tmp_path):
    refused = posenc_train("overwrite=maybe", f"hydra.run.dir={tmp_path / 'r'}")
    assert refused.returncode == 2 and "overwrite='maybe' must be true or false." in refused.stderr
    assert not (tmp_path / "r").exists()


def test_a_folder_with_a_runs_file_names_but_no_config_is_refused_unchanged(tmp_path):
    """Not a run this command wrote (no config.yaml): resuming is impossible, and a new run
    would append to its metrics.jsonl. overwrite=true is the way to use the folder."""
    (tmp_path / "metrics.jsonl").write_text('{"step": 5}\n')
    (tmp_path / "notes.txt").write_text("mine")
    before = files_of(tmp_path)
    with pytest.raises(ConfigError, match=r"holds files a run writes \(metrics.jsonl\) but no"):
        run(make_settings("task=reverse"), tmp_path, show_progress=False)
    assert files_of(tmp_path) == before


def test_a_sweep_run_again_keeps_its_finished_jobs_and_finishes_the_others(tmp_path, capsys):
    """A pre-empted sweep is resumed by running it again: the finished job is kept as it is,
    the unfinished one resumed (here: its results.json removed, its checkpoints kept)."""
    sweep = ["-m", f"hydra.sweep.dir={tmp_path}", *FAST, "task=reverse", "seed=0,1"]
    code, _, err = run_in_process(main, sweep, capsys)
    assert code == 0, err
    first, second = sorted(tmp_path.glob("*_seed*"))
    kept = files_of(first) | {path: path.stat().st_mtime_ns for path in first.rglob("*")}
    finished = json.loads((second / outputs.RESULTS_FILE).read_text())
    (second / outputs.RESULTS_FILE).unlink()
    code, out, err = run_in_process(main, sweep, capsys)
    assert code == 0, err
    assert f"{first} already holds this finished run; kept as it is." in out
    assert f"Resuming {second}" in out
    assert files_of(first) | {path: path.stat().st_mtime_ns for path in first.rglob("*")} == kept
    again = json.loads((second / outputs.RESULTS_FILE).read_text())
    assert without_timing(again) == without_timing(finished)


def test_the_resume_hint_of_a_sweep_job_is_the_sweep_into_its_folder(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["posenc-train", "-m", "seed=0,1"])
    job = SimpleNamespace(mode=RunMode.MULTIRUN, sweep=SimpleNamespace(dir="/s/w"))
    hint = cli._resume_hint(job, "posenc-train -m seed=1", Path("/s/w/1_x"))
    assert hint.endswith("posenc-train -m seed=0,1 hydra.sweep.dir=/s/w")
    single = SimpleNamespace(mode=RunMode.RUN)
    assert cli._resume_hint(single, "posenc-train seed=1", Path("/r")).endswith(
        "posenc-train seed=1 hydra.run.dir=/r"
    )


def test_overwrite_deletes_only_what_a_run_writes_and_links_as_links(tmp_path):
    """Names a user may choose (seed_notes.txt, hparams_plan.yaml, a link seed_data) are not a
    run's; a link with a run's name (train_state to scratch space) goes, not what it points
    to."""
    run_dir, scratch = tmp_path / "run", tmp_path / "scratch"
    (scratch / "train_state").mkdir(parents=True)
    (scratch / "train_state" / "keep.txt").write_text("scratch")
    run(make_settings("task=reverse"), run_dir, show_progress=False)
    mine = {"seed_notes.txt": "a", "hparams_plan.yaml": "b"}
    for name, text in mine.items():
        (run_dir / name).write_text(text)
    (run_dir / "seed_data").symlink_to(scratch)
    shutil.rmtree(run_dir / "train_state")
    (run_dir / "train_state").symlink_to(scratch / "train_state")
    run(make_settings("task=reverse"), run_dir, show_progress=False, overwrite=True)
    assert all((run_dir / name).read_text() == text for name, text in mine.items())
    assert (run_dir / "seed_data").is_symlink()
    assert (scratch / "train_state" / "keep.txt").read_text() == "scratch"
    assert not (run_dir / "train_state").is_symlink() and (run_dir / "results.json").exists()


@pytest.mark.parametrize("damage", ["cut", "removed"])
def test_a_log_cut_short_after_its_checkpoint_is_refused_unchanged(monkeypatch, tmp_path, damage):
    """Resuming cuts metrics.jsonl back to the length its checkpoint recorded; a shorter one
    would be padded with NUL bytes, its history lost."""
    folder = interrupted_folder(monkeypatch, tmp_path)
    jsonl = folder / "metrics.jsonl"
    if damage == "cut":
        jsonl.write_bytes(jsonl.read_bytes()[:20])
    else:
        jsonl.unlink()
    before = files_of(folder)
    with pytest.raises(ConfigError, match=r"metrics.jsonl holds \d+ bytes, fewer than the"):
        run(
            make_settings("task=reverse", "train.steps=40", "train.checkpoint_every=10"),
            folder,
            show_progress=False,
        )
    assert files_of(folder) == before


@pytest.mark.parametrize("num_seeds", [1, 2])
def test_a_run_stopped_while_writing_its_evaluation_logs_it_once_on_rerun(
    monkeypatch, tmp_path, num_seeds
):
    """Stopped after the evaluation's scalars, series and HParams session were logged (at
    the plot): the rerun evaluates again, and TensorBoard and metrics.jsonl hold each
    evaluation entry once, as an uninterrupted run's do."""
    settings = make_settings("task=reverse", f"train.num_seeds={num_seeds}")
    original = run_log.RunLog.figure

    def stopped(self, tag, figure, step):
        monkeypatch.setattr(run_log.RunLog, "figure", original)
        raise Interrupted

    monkeypatch.setattr(run_log.RunLog, "figure", stopped)
    with pytest.raises(Interrupted):
        run(settings, tmp_path / "resumed", show_progress=False)
    resumed = run(settings, tmp_path / "resumed", show_progress=False)
    alone = run(settings, tmp_path / "alone", show_progress=False)
    assert without_timing(resumed) == without_timing(alone)
    logs = ["."] + [f"seed_{seed}" for seed in range(num_seeds)] * (num_seeds > 1)
    for log in logs:
        folders = [tmp_path / run_name / log for run_name in ("resumed", "alone")]
        texts = [(folder / "metrics.jsonl").read_text() for folder in folders]
        assert texts[0] == texts[1]
        for tag in ("eval/acc_id", "eval/token_acc_by_length"):
            assert logged_steps(folders[0], tag) == logged_steps(folders[1], tag)
        sessions = [len(list(folder.glob("hparams/events.out.tfevents.*"))) for folder in folders]
        assert sessions[0] == sessions[1]


@pytest.mark.parametrize(
    "folder",
    ["/r/plain-1.0", "/r/ünï 🚀", "/r/co,mma", "/r/it's", "/r/a\\b", "/r/end\\", "/r/q\\'"],
)
def test_the_resume_hint_reads_back_as_the_folder_in_a_shell_and_in_hydra(folder):
    """The adversarial tester's unicode and comma folders gave hints Hydra could not read."""
    hint = cli._resume_hint(SimpleNamespace(mode=RunMode.RUN), "posenc-train", Path(folder))
    argument = shlex.split(hint.rpartition(": ")[2])[-1]
    (override,) = OverridesParser.create().parse_overrides([argument])
    assert override.key_or_group == "hydra.run.dir" and override.value() == folder


def test_sigterm_in_the_last_chunk_stops_before_evaluating_and_the_rerun_evaluates(
    monkeypatch, tmp_path
):
    """Asked after steps 5, 10 and 15 by training, and once more when training has ended:
    the run is saved at 20 and stops there instead of evaluating."""
    stop_requested_at_ask(monkeypatch, 3)
    settings = make_settings("task=reverse")
    with pytest.raises(Preempted, match="stopped at step 20; resumes from step 20"):
        run(settings, tmp_path / "resumed", show_progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "resumed" / outputs.RESULTS_FILE).exists()
    resumed = run(settings, tmp_path / "resumed", show_progress=False)
    alone = run(settings, tmp_path / "alone", show_progress=False)
    assert without_timing(resumed) == without_timing(alone)


def test_sigterm_during_evaluation_stops_it_and_the_rerun_evaluates(monkeypatch, tmp_path):
    """A real SIGTERM to this process once evaluation has begun: it raises Preempted there
    (no silent death by the default handler), and the rerun evaluates from the end of
    training."""
    original = run_module.record_evaluation

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(run_module, "record_evaluation", signalled)
    handler = signal.getsignal(signal.SIGTERM)
    settings = make_settings("task=reverse")
    with pytest.raises(Preempted, match="stopped at step 20; resumes from step 20"):
        run(settings, tmp_path / "resumed", show_progress=False)
    monkeypatch.undo()
    resumed = run(settings, tmp_path / "resumed", show_progress=False)
    alone = run(settings, tmp_path / "alone", show_progress=False)
    assert without_timing(resumed) == without_timing(alone)
    assert signal.getsignal(signal.SIGTERM) == handler  # put back


def test_an_evaluation_replaces_only_its_own_events_file(tmp_path):
    """A tag may contain '.eval_...': evaluation eval_b must not take eval_a.eval_b's file."""
    log = run_log.RunLog(tmp_path)
    log.begin_evaluation("eval_a.eval_b", "hparams_a.eval_b")
    log.scalars(1, {"eval_a.eval_b/acc": 0.5})
    log.begin_evaluation("eval_b", "hparams_b")
    log.scalars(1, {"eval_b/acc": 0.25})
    log.close()
    assert [step for step, _ in logged_steps(tmp_path, "eval_a.eval_b/acc")] == [1]
    assert [step for step, _ in logged_steps(tmp_path, "eval_b/acc")] == [1]
