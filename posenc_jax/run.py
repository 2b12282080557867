"""One run, end to end: train, evaluate per length, and write every output. Knows no Hydra.

The files of a run folder, and the results schema, are defined in `outputs.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from posenc_jax.checkpoint import TrainingCheckpoints, save_params
from posenc_jax.config import Settings
from posenc_jax.distributed import initialize, require_same_run, to_host, writes_outputs
from posenc_jax.errors import ConfigError, described
from posenc_jax.metrics import Counts
from posenc_jax.outputs import (
    CONFIG_FILE,
    RESULTS_FILE,
    clear_run_files,
    flatten,
    log_folders,
    record_evaluation,
    reserve_open_files,
    results_document,
    run_files,
    run_logs,
    run_title,
    write_results,
)
from posenc_jax.provenance import provenance
from posenc_jax.run_log import LogPosition
from posenc_jax.sharding import device_mesh
from posenc_jax.train import Preempted, ResumePoint, TrainState, train


def run(
    settings: Settings,
    out_dir: str | os.PathLike,
    show_progress: bool = True,
    command: str | None = None,
    overwrite: bool = False,
    keep_finished: bool = False,
) -> dict[str, Any]:
    """Train and evaluate `settings`, write every output into `out_dir`; returns results.json.
    `command` is recorded as the one that reproduces this run (see `provenance`).

    With train.distributed, every process of the run calls this with the same arguments; only
    process 0 writes (`distributed.py`).

    overwrite=True starts over in a folder that holds a run, finished or not: once every check
    has passed, the files a run writes there are deleted (`clear_run_files`; other files stay).
    keep_finished=True (a job of a sweep run again, to finish the jobs it had not) returns the
    results of a finished run with these same settings instead of refusing the folder.

    A folder left unfinished by an earlier attempt with the same settings is resumed: from its
    newest complete training checkpoint (`checkpoint.TrainingCheckpoints`), its logs cut back
    to where that checkpoint left them, or from step 0, its logs emptied, if it has none. The
    results equal those of a run never interrupted, timing aside.

    Raises ConfigError, before anything is written, if `out_dir` already holds a finished run
    or an unfinished one with other settings, if the process may not open enough files for
    train.num_seeds replicas' logs, if train.distributed finds no cluster, or if the visible
    devices cannot split the work as train.sharding asks."""
    run_dir = Path(out_dir).absolute()
    if (run_dir / RESULTS_FILE).exists() and not overwrite:
        if keep_finished and _stored_run_settings(run_dir, settings, "a finished run") is not None:
            print(f"{run_dir} already holds this finished run; kept as it is.")
            return json.loads((run_dir / RESULTS_FILE).read_text())
        raise ConfigError(
            f"{run_dir} already holds a finished run ({RESULTS_FILE} exists); refusing to "
            f"overwrite it. Choose another output directory (hydra.run.dir=... for one run, "
            f"hydra.sweep.dir=... for a sweep), or add overwrite=true to start it over."
        )
    stored = None if overwrite else _stored_run_settings(run_dir, settings)
    reserve_open_files(settings)
    initialize(settings)  # before any device is touched
    require_same_run(settings, run_dir)
    device_mesh(settings)  # the devices can split the work: checked before anything is written
    origin = provenance(command)  # the code as it starts, before a long run lets it change
    writer = writes_outputs()
    if overwrite:
        if writer:
            clear_run_files(run_dir)
        if jax.process_count() > 1:  # no process writes before process 0 has cleared
            multihost_utils.sync_global_devices("posenc_jax: run folder cleared")
    if writer and stored is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(settings.to_dict(), sort_keys=False))
    checkpoints = TrainingCheckpoints(run_dir, settings.train.checkpoints_to_keep)
    resume, positions = None, None
    if stored is not None:
        resume, positions = _resume_point(checkpoints, settings)
        if writer:
            try:
                _require_logs_reach(run_dir, settings, positions)
            except ConfigError:
                checkpoints.close()
                raise
            print(f"Resuming {run_dir} from step {resume.step if resume else 0}.")

    with run_logs(run_dir, settings, write=writer, resume_at=positions) as logs:
        with tqdm(
            total=settings.train.steps,
            desc=run_title(settings),
            disable=not (show_progress and writer),
            dynamic_ncols=True,
        ) as bar:

            def on_log(step: int, per_seed: list[dict[str, float]]) -> None:
                for replica_log, scalars in zip(logs.replicas, per_seed, strict=True):
                    replica_log.scalars(step, scalars)
                bar.update(step - bar.n)
                bar.set_postfix(  # the mean over seeds, with several
                    loss=f"{np.mean([s['train/loss'] for s in per_seed]):.4f}",
                    acc=f"{np.mean([s['train/acc'] for s in per_seed]):.3f}",
                )

            def on_checkpoint(
                step: int, state: TrainState, replicas: list[dict], window: Counts | None
            ) -> None:
                progress = {
                    "config": settings.to_dict(),  # whose checkpoint it is (`latest` checks)
                    "replicas": replicas,
                    "logs": logs.positions(step),
                }
                checkpoints.save(step, state, progress, window)

            with sigterm_requests_stop() as stop_requested:
                try:
                    outcome = train(settings, on_log, resume, on_checkpoint, stop_requested)
                finally:
                    checkpoints.close()  # still under the handler: a second SIGTERM waits too
                step = outcome.summary["steps"]
                completed = [s["status"] == "completed" for s in outcome.seed_summaries]
                if stop_requested() and any(completed):  # in the last chunk: saved, not evaluated
                    raise Preempted(step, step)
        evaluations: list[dict[str, Any] | None] = [None] * len(completed)
        if any(completed):
            save_params(run_dir, outcome.params)  # by every process: each saves its pieces
            # Evaluation keeps no state worth saving: SIGTERM stops it at once, and the rerun
            # evaluates again from the final checkpoint.
            with sigterm_raises(Preempted(step, step)):
                evaluations = record_evaluation(
                    settings,
                    outcome.graphdef,
                    outcome.params,
                    run_dir,
                    logs,
                    step,
                    completed,
                    show_progress=show_progress,
                )
        diverged = [
            f"seed {s['seed']} at step {s['steps']}"
            for s in outcome.seed_summaries
            if s["status"] != "completed"
        ]
        if diverged and writer:
            print(
                f"The loss or its gradient is not finite ({', '.join(diverged)}): status "
                f"'diverged', the last good checkpoint kept, and "
                f"{'it was' if len(diverged) == 1 else 'they were'} not evaluated. Lower "
                f"optim.learning_rate or check the config."
            )
        results = results_document(
            settings, outcome.summary, outcome.seed_summaries, evaluations, origin
        )
        if writer:
            write_results(run_dir, results)
    return results


def _stored_run_settings(
    run_dir: Path, settings: Settings, held: str = "an unfinished run"
) -> dict[str, Any] | None:
    """The settings of the run in `run_dir` (`held`: "an unfinished run" or "a finished
    run"), from its config.yaml; None if the folder holds no run; ConfigError if they are not
    `settings`: resuming it, or keeping it as this run, would mix two runs."""
    config = run_dir / CONFIG_FILE
    if not config.is_file():
        # Without config.yaml, files with a run's names are not a run this command wrote:
        # resuming is impossible, and a new run would append to or replace them.
        found = sorted(path.name for path in run_files(run_dir))
        if found:
            raise ConfigError(
                f"{run_dir} holds files a run writes ({', '.join(found[:5])}"
                f"{', ...' if len(found) > 5 else ''}) but no {CONFIG_FILE}, so it is not a run "
                f"this command can resume, and a new run would write over them; nothing was "
                f"changed. Choose another folder (hydra.run.dir=...), or add overwrite=true to "
                f"delete them and start over."
            )
        return None
    try:
        stored = yaml.safe_load(config.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        stored = error
    if not isinstance(stored, dict):
        raise ConfigError(
            f"{config} is not a run's config (it does not read as a mapping of settings), so "
            f"{run_dir} cannot be resumed or used for a new run; nothing was changed. Choose "
            f"another folder (hydra.run.dir=...)."
        )
    wanted = settings.to_dict()
    if stored == wanted:
        return stored
    wanted_flat, stored_flat = flatten(wanted), flatten(stored)
    differ = sorted(
        key
        for key in wanted_flat.keys() | stored_flat.keys()
        if wanted_flat.get(key) != stored_flat.get(key)
    )
    named = ", ".join(differ[:5]) + (", ..." if len(differ) > 5 else "")
    raise ConfigError(
        f"{run_dir} holds {held} with other settings ({named} "
        f"{'differs' if len(differ) == 1 else 'differ'}), so this run cannot resume it; nothing "
        f"was changed. Rerun the command that started it to resume it, choose another folder "
        f"(hydra.run.dir=...; hydra.sweep.dir=... for a sweep), or add overwrite=true to "
        f"delete that run and start this one."
    )


def _require_logs_reach(run_dir: Path, settings: Settings, positions: list[LogPosition]) -> None:
    """A resume cuts each metrics.jsonl back to the length its checkpoint recorded. One that is
    shorter was cut or removed after that checkpoint: cutting would pad it with NUL bytes, and
    its history would be lost without a word. ConfigError, before anything changes."""
    for folder, position in zip(log_folders(run_dir, settings), positions, strict=True):
        jsonl = folder / "metrics.jsonl"
        size = jsonl.stat().st_size if jsonl.is_file() else 0
        if size < position.jsonl_bytes:
            raise ConfigError(
                f"{jsonl} holds {size} bytes, fewer than the {position.jsonl_bytes} its "
                f"newest checkpoint (step {position.step}) recorded: it was cut short or removed "
                f"after that checkpoint, so resuming would lose its history; nothing was "
                f"changed. Restore it, or start the run over with overwrite=true."
            )


def _resume_point(
    checkpoints: TrainingCheckpoints, settings: Settings
) -> tuple[ResumePoint | None, list[LogPosition]]:
    """Where an unfinished run goes on from, and where each of its logs must be cut back to:
    its newest checkpoint, or step 0 and empty logs if it has none."""
    try:
        latest = checkpoints.latest(settings)
    except Exception as error:  # orbax raises many types for unreadable files; all mean the same
        checkpoints.close()
        raise ConfigError(
            f"The newest training checkpoint in {checkpoints.folder} cannot be read as this "
            f"run's ({described(error)}): it is corrupt, or from another run. "
            f"Nothing was trained or changed. Remove that checkpoint's step folder to resume from "
            f"the one before it, or the whole folder to start over from step 0, or choose "
            f"another run folder (hydra.run.dir=...)."
        ) from error
    logs = 1 + (settings.train.num_seeds if settings.train.num_seeds > 1 else 0)
    if latest is None:
        return None, [LogPosition(0, 0)] * logs
    state, progress, window = latest
    positions = [LogPosition(*position) for position in progress["logs"]]
    step = int(np.max(to_host(state.step)))
    return ResumePoint(step, state, progress["replicas"], window), positions


@contextlib.contextmanager
def sigterm_raises(error: Exception) -> Iterator[None]:
    """While inside, SIGTERM raises `error` in the main thread (where Python runs signal
    handlers; elsewhere SIGTERM is left as it is). The previous handler is restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(*_: Any) -> None:
        raise error

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def sigterm_requests_stop() -> Iterator[Callable[[], bool]]:
    """While inside, SIGTERM (what SLURM sends before it kills a job) does not kill the process
    but makes the returned function say True, so training can stop at the end of its chunk
    with a checkpoint (`train.Preempted`). The previous handler is restored on exit. Outside
    the main thread, where Python cannot handle signals, SIGTERM is left as it is."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: requested.set())
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGTERM, previous)
