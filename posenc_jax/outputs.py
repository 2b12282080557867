"""The run folder's files and the results schema, owned in one place; `run.py` (a training run)
and `reevaluate.py` (`posenc-eval`) both write through here.

    config.yaml                 the resolved settings (derived values filled in)
    events.out.tfevents.*       TensorBoard (see `run_log.py`)
    metrics.jsonl               the same scalars, one JSON object per log step, append-only
    results.json                the final summary, written last and atomically: its presence
                                means "finished"
    checkpoint/                 the trained parameters (`checkpoint.py`)
    train_state/<step>/         training checkpoints to resume from (`checkpoint.py`)
    accuracy_vs_length.png      one line per `metrics.PER_LENGTH` metric
    attention_layer<L>.png      with eval.save_attention=true

With train.num_seeds > 1 (seeds as a batch axis, `seeds.py`), the run folder also holds
seed_<s>/ per replica: its own TensorBoard events (training curves, per-length series, HParams
session) and metrics.jsonl, as if it were a run of its own; the folder's own events hold the
evaluation's mean over seeds, and the plot shows it with a band of ± one standard deviation.

A re-evaluation with tag <tag> writes results_<tag>.json, accuracy_vs_length_<tag>.png,
attention_<tag>_layer<L>.png and TensorBoard tags under eval_<tag>/, beside and never over the
original files.

results.json: {"status", "encoding", "task", "config", "train", "eval", "provenance"}; "train"
is the training summary (`train.train`), "eval" the evaluation (`evaluate.evaluate`) or null if
training did not complete. With several seeds, "eval" is their mean and standard deviation
(`seeds.aggregate`, over the seeds that completed) and "seeds" lists each replica:
{"seed", "status", "train": its steps and final loss, "eval": its evaluation or null}.
Strict JSON: a NaN or infinite value is written as null.
"""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from posenc_jax import metrics, seeds
from posenc_jax.config import Settings
from posenc_jax.distributed import writes_outputs
from posenc_jax.errors import ConfigError
from posenc_jax.evaluate import evaluate_with_attention, length_work
from posenc_jax.report import accuracy_figure, attention_figure, format_table
from posenc_jax.run_log import DiscardedLog, LogPosition, RunLog, json_safe

CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"


def results_file(tag: str = "") -> str:
    """results.json, or results_<tag>.json for a tagged re-evaluation."""
    return f"results_{tag}.json" if tag else RESULTS_FILE


def run_title(settings: Settings) -> str:
    """e.g. "rope · reverse · decoder (greedy)": a decoder's title says how it is scored."""
    mode = f"decoder ({settings.scoring})" if settings.model.causal else "encoder"
    return f"{settings.encoding.name} · {settings.task.name} · {mode}"


def results_document(
    settings: Settings,
    train_summary: Mapping[str, Any],
    seed_summaries: Sequence[Mapping[str, Any]],
    evaluations: Sequence[dict[str, Any] | None],
    origin: Mapping[str, Any],
) -> dict[str, Any]:
    """The content of results.json (and of every results_<tag>.json): `seed_summaries` and
    `evaluations` hold one entry per replica (`train.train`'s seed_summaries; None for a seed
    that was not evaluated); `origin` is the `provenance.provenance()` record of the process
    that wrote it."""
    document = {
        "status": train_summary["status"],
        "encoding": settings.encoding.name,
        "task": settings.task.name,
        "config": settings.to_dict(),
        "train": dict(train_summary),
        "eval": combined_evaluation(settings, evaluations),
        "provenance": dict(origin),
    }
    if settings.train.num_seeds > 1:
        document["seeds"] = [
            {
                "seed": summary["seed"],
                "status": summary["status"],
                "train": {k: v for k, v in summary.items() if k not in ("seed", "status")},
                "eval": evaluation,
            }
            for summary, evaluation in zip(seed_summaries, evaluations, strict=True)
        ]
    return json_safe(document)


def combined_evaluation(
    settings: Settings, evaluations: Sequence[dict[str, Any] | None]
) -> dict[str, Any] | None:
    """A run's "eval": its one seed's evaluation, or the mean over its seeds."""
    if settings.train.num_seeds == 1:
        return evaluations[0]
    return seeds.aggregate(evaluations, seeds.seeds_of(settings))


def write_results(run_dir: Path, results: dict[str, Any], tag: str = "") -> Path:
    """Write results atomically (a reader never sees half a file); returns the path."""
    path = run_dir / results_file(tag)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, allow_nan=False))
    tmp.replace(path)
    return path


def eval_scalars(evaluation: Mapping[str, Any], prefix: str) -> dict[str, float | None]:
    """TensorBoard/metrics.jsonl scalars of one evaluation, at the training step:
    <prefix>/<key> for each metric's means (see `metrics.LengthMetric`)."""
    return {
        f"{prefix}/{key}": evaluation[key]
        for metric in metrics.PER_LENGTH
        for key in (*metric.summaries, metric.ood_representable)
    }


def length_series(evaluation: Mapping[str, Any], prefix: str) -> dict[str, list]:
    """Each per-length metric as (length, value) points, under <prefix>/<metric>_by_length:
    TensorBoard draws them with the input length as the step."""
    return {
        f"{prefix}/{metric.name}_by_length": list(
            zip(evaluation["lengths"], evaluation[metric.name], strict=True)
        )
        for metric in metrics.PER_LENGTH
    }


def flatten(config: Mapping[str, Any]) -> dict[str, Any]:
    """Nested settings as dotted keys: {"encoding": {"name": "rope"}, "seed": 0} ->
    {"encoding.name": "rope", "seed": 0}; a list numbers its items (a hybrid's
    "encoding.layers.0.name")."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, list):
            value = {str(index): item for index, item in enumerate(value)}
        if isinstance(value, Mapping):
            flat.update({f"{key}.{inner}": item for inner, item in flatten(value).items()})
        else:
            flat[key] = value
    return flat


def hparams(settings: Settings) -> dict[str, bool | int | float | str]:
    """Every setting as a flat HParams entry ("encoding.name": "rope", "model.d_model": 64);
    None, which HParams cannot hold, as its text."""
    return {
        key: value if isinstance(value, (bool, int, float, str)) else str(value)
        for key, value in flatten(settings.to_dict()).items()
    }


# A replica's log holds its TensorBoard event file and metrics.jsonl open for the whole run.
FILES_PER_REPLICA = 2
# What the rest of the process may hold open at once: JAX, orbax, Python's own files.
FILES_BESIDE_THE_LOGS = 256


def reserve_open_files(settings: Settings) -> None:
    """Make sure this process may hold every replica's log open at once, before anything is
    written: raise its soft limit on open files up to what the logs need (within the hard limit,
    as `ulimit -n` would), else raise ConfigError naming both numbers."""
    needed = FILES_PER_REPLICA * settings.train.num_seeds + FILES_BESIDE_THE_LOGS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    if hard == resource.RLIM_INFINITY or needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return
    most = (hard - FILES_BESIDE_THE_LOGS) // FILES_PER_REPLICA
    raise ConfigError(
        f"train.num_seeds={settings.train.num_seeds} needs about {needed} open files (each "
        f"replica keeps {FILES_PER_REPLICA} logs open), but this process may open at most "
        f"{hard} (its hard limit). Use at most train.num_seeds={max(most, 1)}, and cover more "
        f"seeds with several runs (seed=0, seed={max(most, 1)}, ...); nothing was written."
    )


class RunLogs(NamedTuple):
    folder: RunLog  # the run folder's own log
    replicas: list[RunLog]  # one per replica: the folder's own with one seed, else seed_<s>/

    def each(self) -> list[RunLog]:
        """Every log once: the folder's own, then the replicas' own (with several seeds)."""
        return list({id(log): log for log in (self.folder, *self.replicas)}.values())

    def positions(self, step: int) -> list[LogPosition]:
        """Where each log (in the order of `each`) ends, flushed: see `RunLog.position`."""
        return [log.position(step) for log in self.each()]


def log_folders(run_dir: Path, settings: Settings) -> list[Path]:
    """The folders of the run's logs, in the order of `RunLogs.each`: the run's own, then with
    several seeds each replica's seed_<s>/."""
    folders = [run_dir]
    if settings.train.num_seeds > 1:
        folders += [run_dir / f"seed_{seed}" for seed in seeds.seeds_of(settings)]
    return folders


@contextlib.contextmanager
def run_logs(
    run_dir: Path,
    settings: Settings,
    write: bool = True,
    resume_at: Sequence[LogPosition] | None = None,
) -> Iterator[RunLogs]:
    """The run's `RunLogs`, closed on exit: with one seed the replica's log is the folder's own;
    with several, each replica logs to seed_<s>/. With write=False (a process that does not
    write the run folder, see `distributed.py`), logs that write nothing. `resume_at` (a
    resumed run) gives each log's position at its checkpoint, in the order of `RunLogs.each`."""
    folders = log_folders(run_dir, settings)
    positions = list(resume_at) if resume_at is not None else [None] * len(folders)

    def open_log(folder: Path, position: LogPosition | None) -> RunLog:
        if not write:
            return DiscardedLog()
        folder.mkdir(exist_ok=True)
        return RunLog(folder, position)

    logs = [open_log(folder, position) for folder, position in zip(folders, positions, strict=True)]
    try:
        yield RunLogs(logs[0], logs[1:] or logs[:1])
    finally:
        for log in logs:
            log.close()


def write_evaluation(
    settings: Settings,
    evaluations: Sequence[dict[str, Any] | None],
    attention: list[np.ndarray],
    run_dir: Path,
    logs: RunLogs,
    step: int,
    tag: str = "",
) -> None:
    """Log each replica's evaluation (scalars, by-length series, HParams session) to its log,
    and with several seeds their mean to the run's own log, under `eval` (or `eval_<tag>`) at
    `step`; save the plot (and the attention maps of the first replica, with
    eval.save_attention), and print the table (of the mean over seeds, with several)."""
    prefix, suffix = (f"eval_{tag}", f"_{tag}") if tag else ("eval", "")
    for log in logs.each():
        log.begin_evaluation(prefix, f"hparams{suffix}")
    for index, (evaluation, replica_log) in enumerate(zip(evaluations, logs.replicas, strict=True)):
        if evaluation is not None:
            _log_scalars(evaluation, replica_log, step, prefix)
            replica_log.hparams(
                f"hparams{suffix}",
                hparams(seeds.replica(settings, index)),
                {f"hparams/{key}": evaluation[key] for key in metrics.summary_keys()},
            )
    shown = combined_evaluation(settings, evaluations)
    if shown is None:
        return
    title = run_title(settings) + (f" · {tag}" if tag else "")
    if len(evaluations) > 1:
        _log_scalars(shown, logs.folder, step, prefix)
        title += f" · mean of {len(shown['seeds'])} seeds"
    figure = accuracy_figure(shown, title)
    figure.savefig(run_dir / f"accuracy_vs_length{suffix}.png")
    logs.folder.figure(f"{prefix}/accuracy_vs_length", figure, step)  # closes the figure
    length = shown["attention_len"]
    first = f" · seed {settings.seed}" if len(evaluations) > 1 else ""
    for layer, weights in enumerate(attention):
        figure = attention_figure(
            weights, f"{title}{first} · layer {layer} · input length {length}"
        )
        if settings.eval.save_attention:
            figure.savefig(run_dir / f"attention{suffix}_layer{layer}.png")
        logs.folder.figure(f"{prefix}/attention/layer_{layer}", figure, step)
    print(format_table(shown, title))


def _log_scalars(evaluation: Mapping[str, Any], log: RunLog, step: int, prefix: str) -> None:
    """An evaluation's means at `step`, and its per-length values as series over length."""
    log.scalars(step, eval_scalars(evaluation, prefix))
    for tag_name, points in length_series(evaluation, prefix).items():
        log.series(tag_name, points)


def record_evaluation(
    settings: Settings,
    graphdef: nnx.GraphDef,
    params: Any,
    run_dir: Path,
    logs: RunLogs,
    step: int,
    completed: Sequence[bool],
    tag: str = "",
    show_progress: bool = True,
) -> list[dict[str, Any] | None]:
    """Evaluate with a progress bar (lengths done, time left), then `write_evaluation` (in the
    process that writes the run folder: every process of a distributed run evaluates); returns
    each replica's `eval` section of the results (None for one that did not complete training,
    per `completed`). Shared by a run and its re-evaluations.

    The bar fills by work, not by lengths (`evaluate.length_work`), so that its time left holds
    when the long lengths come last; its label counts the lengths done."""
    description = run_title(settings) + f" · evaluating{f' {tag}' if tag else ''}"
    work = length_work(settings)
    done = 0
    with tqdm(
        total=sum(work.values()),
        desc=f"{description}: 0/{len(work)} lengths",
        bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
        disable=not (show_progress and writes_outputs()),
        dynamic_ncols=True,
    ) as bar:

        def on_progress(length: int) -> None:
            nonlocal done
            done += 1
            bar.set_description_str(f"{description}: {done}/{len(work)} lengths", refresh=False)
            bar.update(work[length])

        evaluations, attention = evaluate_with_attention(settings, graphdef, params, on_progress)
    # A diverged replica's parameters are not finite: its numbers would mean nothing.
    kept = [e if ok else None for e, ok in zip(evaluations, completed, strict=True)]
    if writes_outputs():
        write_evaluation(
            settings, kept, attention if completed[0] else [], run_dir, logs, step, tag
        )
    return kept


# What a run writes into its folder (above), by glob: what overwrite=true deletes.
# A name ending in / is a folder's (tensorboardX's HParams sessions, orbax's checkpoints, a
# replica's logs), so that a user's file such as seed_notes.txt is never taken for one.
RUN_FILES = (
    "config.yaml",
    "results.json",
    "results_*.json",
    "metrics.jsonl",
    "events.out.tfevents.*",
    "accuracy_vs_length*.png",
    "attention*_layer*.png",
    "checkpoint/",
    "train_state/",
    "hparams/",
    "hparams_*/",
    "seed_[0-9]*/",
)


def run_files(run_dir: Path) -> list[Path]:
    """The files and folders in `run_dir` named as a run names them (`RUN_FILES`)."""
    if not run_dir.is_dir():
        return []
    found = []
    for pattern in RUN_FILES:
        folder = pattern.endswith("/")
        found += [
            path
            for path in run_dir.glob(pattern.rstrip("/"))
            if folder == (path.is_dir() and not path.is_symlink()) or path.is_symlink()
        ]
    return found


def clear_run_files(run_dir: Path) -> None:
    """Delete the files and folders a run writes in `run_dir` (`RUN_FILES`), and nothing else.
    A link with such a name is removed as a link: what it points to is not touched."""
    for path in run_files(run_dir):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
