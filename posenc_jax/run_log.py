"""Where a run's numbers go: TensorBoard events (tensorboardX, no TensorFlow) and an
append-only `metrics.jsonl`, one JSON object per line: {"step": ..., "<tag>": value, ...}.

Besides scalars over training steps, TensorBoard gets curves over input length (`series`: the
step is the length, so selecting several runs overlays their accuracy-vs-length curves) and an
HParams session (`hparams`: the run's settings with its summary metrics, sortable and
filterable across a sweep in the HParams tab). Per-length values are in results.json, so
metrics.jsonl keeps to training steps."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from tensorboardX import SummaryWriter

from posenc_jax.errors import ConfigError

# tensorboardX warns of every NaN it is given; the only NaN passed on purpose is an HParams
# metric without a value (e.g. acc_ood of an evaluation that stops at the training length).
logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)


class LogPosition(NamedTuple):
    step: int  # the last step logged
    jsonl_bytes: int  # the length of metrics.jsonl after it


def json_safe(value: Any) -> Any:
    """Replace NaN and infinities (which strict JSON cannot hold) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


class RunLog:
    def __init__(self, run_dir: Path, resume_at: LogPosition | None = None):
        """Open the logs of `run_dir`; with `resume_at` (a resumed run), drop what was logged
        after that position: metrics.jsonl is cut back to it, and TensorBoard is told to
        discard the earlier event files' steps from resume_at.step + 1 on (`purge_step`)."""
        jsonl = run_dir / "metrics.jsonl"
        if resume_at is not None and jsonl.exists():
            os.truncate(jsonl, resume_at.jsonl_bytes)
        purge_step = None if resume_at is None else resume_at.step + 1
        self.run_dir = run_dir
        self.events = self._writer(purge_step=purge_step)
        self.jsonl = open(jsonl, "a", encoding="utf-8")

    def _writer(self, purge_step: int | None = None, evaluation: str = ""):
        # Each writer its own file. tensorboardX names a file by the second it opened and
        # truncates an existing one, and TensorBoard reads a folder's files in name order: the
        # nanosecond suffix keeps every file (of any attempt) apart, in the order they opened.
        # An evaluation's file also ends in its name (`begin_evaluation`).
        return SummaryWriter(
            logdir=str(self.run_dir),
            purge_step=purge_step,
            filename_suffix=f".{time.time_ns():020d}" + (f".{evaluation}" if evaluation else ""),
        )

    def begin_evaluation(self, name: str, hparams_folder: str) -> None:
        """Log what follows, the evaluation `name` (eval, or eval_<tag> for a re-evaluation),
        to its own events file, first removing what an earlier attempt at it logged before
        it was stopped short of its results: its events files, its HParams session folder,
        and its lines of metrics.jsonl (keys under `name`/). A rerun cannot purge those by
        step (its series' steps are input lengths), so this is how each is logged once."""
        self.events.close()
        # Exactly this evaluation's files: a tag may itself contain ".eval_..." (see _writer).
        own = re.compile(rf"events\.out\.tfevents\..*\.\d{{20}}\.{re.escape(name)}")
        for old in self.run_dir.glob("events.out.tfevents.*"):
            if own.fullmatch(old.name):
                old.unlink()
        shutil.rmtree(self.run_dir / hparams_folder, ignore_errors=True)
        self.jsonl.close()
        jsonl = Path(self.jsonl.name)
        lines = jsonl.read_text(encoding="utf-8").splitlines(keepends=True)
        try:
            kept = [
                line
                for line in lines
                if not any(key.startswith(f"{name}/") for key in json.loads(line))
            ]
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"{jsonl} has a line that is not JSON ({error}): it was edited or damaged, "
                f"so its evaluation lines cannot be replaced; nothing was evaluated. Restore it, "
                f"or start the run over with overwrite=true."
            ) from error
        if kept != lines:  # written aside, then renamed over: a kill leaves one or the other
            partial = jsonl.with_name(jsonl.name + ".tmp")
            partial.write_text("".join(kept), encoding="utf-8")
            os.replace(partial, jsonl)
        self.jsonl = open(jsonl, "a", encoding="utf-8")
        self.events = self._writer(evaluation=name)

    def position(self, step: int) -> LogPosition:
        """Put everything logged so far on disk and say where it ends: what a checkpoint at
        `step` records, so that a run resumed from it logs every later step exactly once.

        tensorboardX hands events to a background thread, and its flush() does not wait for
        that queue: a kill soon after could lose the checkpoint's own step, which a resume's
        purge would then never restore. Closing the writer drains the queue; logging goes on
        in a new events file (TensorBoard reads every file of the folder as one run)."""
        self.events.close()
        self.events = self._writer()
        self.jsonl.flush()
        return LogPosition(step, self.jsonl.tell())

    def scalars(self, step: int, values: Mapping[str, float | None]) -> None:
        """Log scalars under stable tags. None (not measurable) and non-finite values go to the
        JSON lines only, as null."""
        for tag, value in values.items():
            if value is not None and math.isfinite(value):
                self.events.add_scalar(tag, value, step)
        self.jsonl.write(json.dumps(json_safe({"step": step, **values}), allow_nan=False) + "\n")
        self.jsonl.flush()

    def series(self, tag: str, points: Iterable[tuple[int, float | None]]) -> None:
        """One TensorBoard scalar per (x, value), at step x (an input length); None and
        non-finite values (lengths not run) are left out of the curve."""
        for x, value in points:
            if value is not None and math.isfinite(value):
                self.events.add_scalar(tag, value, x)

    def hparams(
        self, name: str, hparams: Mapping[str, bool | int | float | str], metrics: Mapping
    ) -> None:
        """An HParams session in the subfolder `name` (tensorboardX writes it there): the
        settings, and metrics (None, for a mean that could not be computed, becomes NaN)."""
        values = {key: float("nan") if value is None else value for key, value in metrics.items()}
        self.events.add_hparams(dict(hparams), values, name=name)

    def figure(self, tag: str, figure, step: int) -> None:
        self.events.add_figure(tag, figure, step, close=True)

    def close(self) -> None:
        self.events.close()
        self.jsonl.close()


class DiscardedLog(RunLog):
    """A `RunLog` that writes nothing: the logs of a process that does not write the run folder
    (`distributed.writes_outputs`), so that the code that logs need not ask."""

    def __init__(self) -> None:
        pass

    def position(self, step: int) -> LogPosition:
        return LogPosition(step, 0)

    def scalars(self, step: int, values: Mapping[str, float | None]) -> None:
        pass

    def series(self, tag: str, points: Iterable[tuple[int, float | None]]) -> None:
        pass

    def hparams(
        self, name: str, hparams: Mapping[str, bool | int | float | str], metrics: Mapping
    ) -> None:
        pass

    def figure(self, tag: str, figure, step: int) -> None:
        pass

    def begin_evaluation(self, name: str, hparams_folder: str) -> None:
        pass

    def close(self) -> None:
        pass
