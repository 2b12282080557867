"""`posenc-report <folder>`: a study's answer from the runs below a folder (a sweep, or several
sweeps into one folder), in one table and one plot per task.

Every folder below `folder` that holds a run (`config.yaml`, written when a run starts) is read:
its `results.json` if the run completed, otherwise it is listed as skipped with the reason
(unfinished: no results.json; diverged or another status; unreadable). Re-evaluations
(`results_<tag>.json`) are not runs and are not read. A run with train.num_seeds > 1 counts as
its seeds: each replica is read as the run of its own seed would be (it equals that run to float
tolerance), and a diverged replica is skipped on its own.

Completed runs are grouped by their settings with the seed left out, so the seeds of one
configuration pool into one row: (task, encoding, and every other swept setting, i.e. one in
which two runs of the same task and encoding differ, e.g. `model.causal`). Per row, over its seeds:
- acc_id, acc_ood (token accuracy) and seq_acc_id, seq_acc_ood (exact match): mean ± sample
  standard deviation (the mean alone for one seed); "n/a" where a mean is undefined (a length
  the encoding cannot represent);
- seeds: how many runs the row pools;
- longest ≥ threshold: the longest input length up to which the mean token accuracy stays at or
  above the threshold (default 0.9) at every evaluated length from the shortest; "—" if it
  starts below.

Outputs, in `folder` (or `--out`): report.md (the table, what was read and skipped), report.csv
(the same rows, with mean and std in separate columns), and accuracy_vs_length_<task>.png (one
line per row, the mean over seeds with a band of ± one standard deviation, and a dotted
vertical line at the training length). Each run also holds a TensorBoard HParams session
(`hparams/`), so `tensorboard --logdir <folder>` sorts and filters the same runs.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posenc_jax import metrics
from posenc_jax.config import with_added_settings
from posenc_jax.encodings import REGISTRY as ENCODINGS
from posenc_jax.errors import ConfigError
from posenc_jax.outputs import CONFIG_FILE, RESULTS_FILE, flatten
from posenc_jax.report import plt
from posenc_jax.seeds import mean_std

DEFAULT_THRESHOLD = 0.9
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")  # a task name made safe for a file name
SUMMARIES = tuple(metrics.summary_keys())
PER_LENGTH_KEYS = tuple(metric.name for metric in metrics.PER_LENGTH)
# Settings that identify a row by their own columns, or that vary by design between seeds.
ROW_KEYS = ("task.name", "encoding.name")
POOLED_KEYS = ("seed",)
# Part of a row's identity but not a column: it follows from the eval settings shown instead.
UNSHOWN_KEYS = ("eval.lengths",)
# How a run was executed or logged, not what it computed: runs that differ only in these give
# the same numbers (to float rounding), so they pool, and a second run of a seed is a duplicate.
# eval.decoding is left out too: eval.scoring holds what it resolved to (null = greedy).
EXECUTION_KEYS = (
    "train.sharding",
    "train.distributed",
    "train.checkpoint_every",
    "train.checkpoints_to_keep",
    "train.microbatch",
    "train.steps_per_dispatch",
    "train.log_every",
    "eval.attention_len",
    "eval.save_attention",
    "eval.decoding",
)


@dataclass(frozen=True)
class Row:
    """One configuration, its seeds pooled."""

    task: str
    encoding: str
    settings: tuple[tuple[str, Any], ...]  # the other settings that differ between runs
    runs: tuple[dict[str, Any], ...]

    def summary(self, key: str) -> tuple[float | None, float | None]:
        """(mean, std) over seeds of eval[key]; std is None for one seed; both None if any
        seed's value is None."""
        return mean_std([run["eval"][key] for run in self.runs])

    def by_length(self, metric: str = "token_acc") -> tuple[list[int], np.ndarray]:
        """The evaluated lengths and `metric` at each, [seeds, lengths] (NaN where a length did
        not run); every run of a row has the same lengths (same settings)."""
        lengths = self.runs[0]["eval"]["lengths"]
        values = np.array(
            [[np.nan if v is None else v for v in run["eval"][metric]] for run in self.runs]
        )
        return lengths, values

    def longest_at(self, threshold: float) -> int | None:
        """The longest length up to which the mean token accuracy is >= threshold at every
        length from the shortest; None if the shortest is already below."""
        lengths, values = self.by_length()
        longest = None
        for length, mean in zip(lengths, values.mean(axis=0), strict=True):
            if not mean >= threshold:  # NaN (not run) ends the stretch too
                break
            longest = length
        return longest

    @property
    def label(self) -> str:
        extra = ", ".join(f"{key}={value}" for key, value in self.settings)
        return f"{self.encoding} ({extra})" if extra else self.encoding


def read_runs(folder: Path) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The completed runs below `folder`, and (run folder, reason) for each one skipped: not
    finished, not completed, unreadable or incomplete, or a duplicate (the same settings, seed
    and scoring as a run read before it, which would count one seed twice)."""
    runs, skipped = [], []
    seen: dict[str, str] = {}
    for config in sorted(folder.rglob(CONFIG_FILE)):
        run_dir = config.parent
        if ".hydra" in run_dir.parts:  # Hydra's own copy, not a run
            continue
        path = run_dir / RESULTS_FILE
        if not path.exists():
            skipped.append((str(run_dir), "unfinished: no results.json"))
            continue
        try:
            replicas = _replicas(json.loads(path.read_text()))
        except _Malformed as error:
            skipped.append((str(run_dir), f"incomplete results.json: {error}"))
            continue
        except KeyError as error:
            skipped.append((str(run_dir), f"incomplete results.json: no {error}"))
            continue
        except (OSError, ValueError, TypeError) as error:
            skipped.append((str(run_dir), f"unreadable results.json ({type(error).__name__})"))
            continue
        for which, results in replicas:
            where = f"{run_dir}{which}"
            if results["status"] != "completed":
                skipped.append((where, f"status {results['status']!r}"))
                continue
            problem = _incomplete(results)
            if problem:
                skipped.append((where, f"incomplete results.json: {problem}"))
                continue
            identity = repr(sorted(_settings(results).items()))
            if identity in seen:
                skipped.append((where, f"duplicate of {seen[identity]} (same settings and seed)"))
                continue
            seen[identity] = where
            runs.append(results)
    return runs, skipped


class _Malformed(ValueError):
    """A results.json whose seeds do not add up; the message says how."""


def _replicas(results: Any) -> list[tuple[str, dict[str, Any]]]:
    """("", the run) for a one-seed run; for a multi-seed run, (" (seed <s>)", replica) for each
    replica, in the shape of the run of its own seed: its seed, status, train and eval.
    _Malformed unless a multi-seed run lists its seeds seed, seed+1, ... one by one (its "eval",
    their mean, is never read as a run); KeyError or TypeError if the document lacks a part."""
    config = results["config"]
    if not isinstance(config, dict) or not isinstance(config.get("train", {}), dict):
        raise _Malformed("its config, or the config's train section, is not a mapping")
    num_seeds = config.get("train", {}).get("num_seeds", 1)
    if type(num_seeds) is not int:  # 1.0 or true would pose as another setting
        raise _Malformed(f"train.num_seeds={num_seeds!r} is not a whole number")
    if num_seeds == 1 and "seeds" not in results:
        if "status" not in results:
            raise KeyError("status")  # not a run's results
        return [("", results)]
    replicas = results.get("seeds")
    if not (isinstance(replicas, list) and all(isinstance(r, dict) for r in replicas)):
        raise _Malformed(f"train.num_seeds={num_seeds} but no list of per-seed results")
    listed = [replica.get("seed") for replica in replicas]
    expected = [config["seed"] + i for i in range(num_seeds)] if type(num_seeds) is int else None
    if listed != expected or any(type(seed) is not int for seed in listed):
        raise _Malformed(f"seeds {listed} are not the seeds {expected} of train.num_seeds")
    return [
        (
            f" (seed {replica['seed']})",
            {
                **results,
                "status": replica["status"],
                "config": {
                    **config,
                    "seed": replica["seed"],
                    "train": {**config["train"], "num_seeds": 1},
                },
                "train": replica["train"],
                "eval": replica["eval"],
            },
        )
        for replica in results["seeds"]
    ]


def _incomplete(results: Any) -> str | None:
    """What a completed run's results.json lacks for the report, or None."""
    config, evaluation = results.get("config"), results.get("eval")
    if not isinstance(config, dict) or not isinstance(evaluation, dict):
        return "no config or eval section"
    sections = [config.get(section) for section in ("task", "encoding")]
    if not all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in sections):
        return "no task or encoding name in config"
    missing = [
        key
        for key in ("lengths", "train_max_len", *PER_LENGTH_KEYS, *SUMMARIES)
        if key not in evaluation
    ]
    if missing:
        return f"eval lacks {missing}"
    if type(evaluation["train_max_len"]) is not int:
        return "eval.train_max_len is not a whole number"
    if type(config.get("seed")) is not int:  # a bool or 0.0 would pose as another seed
        return "config.seed is not a whole number"
    lengths = evaluation["lengths"]
    per_length = [evaluation[key] for key in PER_LENGTH_KEYS]
    if not isinstance(lengths, list) or not all(
        isinstance(values, list) and len(values) == len(lengths) for values in per_length
    ):
        return "per-length values do not match eval.lengths"
    if not all(type(n) is int for n in lengths):
        return "eval.lengths are not whole numbers"
    numbers = [*(v for values in per_length for v in values), *(evaluation[k] for k in SUMMARIES)]
    if not all(v is None or type(v) in (int, float) for v in numbers):  # a bool is no metric
        return "a metric that is not a number"
    if not all(v is None or 0.0 <= v <= 1.0 for v in numbers):  # NaN fails this too
        return "an accuracy outside [0, 1]"
    return None


def _settings(results: Mapping[str, Any]) -> dict[str, Any]:
    """What a run computed, as dotted keys: its settings (those added since it ran at the value
    it had, `config.ADDED_SETTINGS`; not its `EXECUTION_KEYS`), its scoring (a decoder trained
    before eval.decoding existed was scored teacher-forced, one after it greedily; results from
    before eval.scoring existed were teacher-forced or an encoder's) and its lengths."""
    settings = with_added_settings(flatten(results["config"]))  # as older runs had them
    # An encoding parameter added since the run (RoPE's fraction) at the default it ran with
    # (not a hybrid's layers: their entries are the run's own).
    name = settings.get("encoding.name")
    if name in ENCODINGS:
        defaults = flatten({"encoding": ENCODINGS[name]().to_dict()})
        added = {k: v for k, v in defaults.items() if not k.startswith("encoding.layers.")}
        settings = {**added, **settings}
    scoring = results["eval"].get("scoring")
    if scoring is None:
        scoring = "teacher_forced" if settings.get("model.causal") is True else "encoder"
    what = {key: value for key, value in settings.items() if key not in EXECUTION_KEYS}
    # The evaluated lengths too: runs that differ in them cannot be averaged length by length.
    return {**what, "eval.scoring": scoring, "eval.lengths": tuple(results["eval"]["lengths"])}


def group_runs(runs: Sequence[Mapping[str, Any]]) -> list[Row]:
    """Rows of runs that differ only by seed, sorted by task, encoding, then other settings."""
    flat = [_settings(run) for run in runs]
    keys = sorted({key for settings in flat for key in settings})
    # Shown as columns: a setting two runs of one task and encoding differ in (swept), and
    # any setting but an encoding's own parameters that differs within a task (model.causal,
    # train.steps, eval.scoring, the task's own parameters). An encoding's parameters differ
    # between encodings by nature (only RoPE has encoding.base).
    within: dict[tuple, list] = defaultdict(list)
    for settings in flat:
        within[tuple(settings.get(key) for key in ROW_KEYS)].append(settings)
        within[(settings.get("task.name"),)].append(settings)

    def differs(key: str) -> bool:
        return any(
            len({repr(s.get(key)) for s in same}) > 1
            for group, same in within.items()
            if len(group) == 2 or not key.startswith("encoding.")
        )

    hidden = ROW_KEYS + POOLED_KEYS + UNSHOWN_KEYS
    varying = [key for key in keys if key not in hidden and differs(key)]
    groups: dict[tuple, list] = defaultdict(list)
    for run, settings in zip(runs, flat, strict=True):
        identity = tuple(repr(settings.get(key)) for key in keys if key not in POOLED_KEYS)
        groups[identity].append((run, settings))
    rows = []
    for members in groups.values():
        settings = members[0][1]
        rows.append(
            Row(
                task=str(settings["task.name"]),
                encoding=str(settings["encoding.name"]),
                settings=tuple((key, settings.get(key)) for key in varying),
                runs=tuple(run for run, _ in members),
            )
        )
    return sorted(rows, key=lambda row: (row.task, row.encoding, repr(row.settings)))


def _swept(rows: Sequence[Row]) -> list[str]:
    """The settings shown as columns: every row lists the same ones (see `group_runs`)."""
    return [key for key, _ in rows[0].settings] if rows else []


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def markdown_table(rows: Sequence[Row], threshold: float) -> str:
    header = ["task", "encoding", *_swept(rows), *SUMMARIES, "seeds", f"longest ≥ {threshold:g}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        longest = row.longest_at(threshold)
        cells = [
            row.task,
            row.encoding,
            *(str(value) for _, value in row.settings),
            *(_cell(*row.summary(key)) for key in SUMMARIES),
            str(len(row.runs)),
            "—" if longest is None else str(longest),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: Sequence[Row], threshold: float, path: Path) -> None:
    """report.csv: the table's rows, mean and std in separate columns (empty where undefined)."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        stats = [f"{key}_{part}" for key in SUMMARIES for part in ("mean", "std")]
        writer.writerow(
            ["task", "encoding", *_swept(rows), *stats, "seeds", "longest_at_threshold"]
        )
        for row in rows:
            values = [value for key in SUMMARIES for value in row.summary(key)]
            writer.writerow(
                [
                    row.task,
                    row.encoding,
                    *(value for _, value in row.settings),
                    *("" if value is None else f"{value:.6f}" for value in values),
                    len(row.runs),
                    "" if (longest := row.longest_at(threshold)) is None else longest,
                ]
            )


def task_figure(task: str, rows: Sequence[Row]):
    """Mean token accuracy against input length, one line per row, a band of ± one standard
    deviation over seeds, and a dotted line at each training length. Ten colours, then the
    next line style: 13 encodings stay tellable apart. The legend sits beside the axes."""
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=100)
    colours = [f"C{i}" for i in range(10)]  # the default cycle (tab10)
    for index, row in enumerate(rows):
        lengths, values = row.by_length()
        mean = values.mean(axis=0)
        (line,) = axes.plot(
            lengths,
            mean,
            color=colours[index % len(colours)],
            linestyle=("-", "--", "-.")[index // len(colours) % 3],
            label=f"{row.label} ({len(row.runs)} seeds)",
        )
        if len(row.runs) > 1:
            std = values.std(axis=0, ddof=1)
            axes.fill_between(lengths, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    for train_max_len in sorted({row.runs[0]["eval"]["train_max_len"] for row in rows}):
        axes.axvline(train_max_len, color="0.4", linestyle=":", linewidth=1)
    axes.set(
        xlabel="input length (dotted: longest trained)",
        ylabel="token accuracy",
        ylim=(-0.02, 1.02),
        title=task,
    )
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="x-small")
    figure.tight_layout()
    return figure


def write_report(
    folder: Path, out_dir: Path | None = None, threshold: float = DEFAULT_THRESHOLD
) -> tuple[str, list[Path]]:
    """Read the runs below `folder`, write report.md, report.csv (its header only if no run
    was read) and one plot per task into `out_dir` (default `folder`); returns report.md's text
    and the files written. Raises OSError if `out_dir` cannot be written, and ConfigError,
    before writing anything, if `folder` holds no run at all."""
    out_dir = out_dir or folder
    runs, skipped = read_runs(folder)
    if not runs and not skipped:
        raise ConfigError(
            f"Found no run below {folder} (no {CONFIG_FILE} in it or its subfolders), so there is "
            f"nothing to report; pass the folder of a sweep, e.g. multirun/encodings_reverse."
        )
    rows = group_runs(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.md", out_dir / "report.csv"]
    write_csv(rows, threshold, written[1])
    lines = [
        f"# Report: {folder}",
        "",
        f"Read {len(runs)} completed runs in {len(rows)} rows; skipped {len(skipped)}.",
    ]
    lines += [f"- skipped {path}: {reason}" for path, reason in skipped]
    if rows:
        lines += ["", markdown_table(rows, threshold), ""]
        lines.append(
            "Token accuracy (acc) and exact match (seq_acc), in distribution (id: lengths up to "
            "the training length) and out of it (ood), mean ± std over seeds; "
            f"longest ≥ {threshold:g}: the longest length up to which the mean token accuracy "
            "stays at or above it."
        )
    for task in sorted({row.task for row in rows}):
        figure = task_figure(task, [row for row in rows if row.task == task])
        written.append(out_dir / f"accuracy_vs_length_{_SAFE.sub('-', task)}.png")
        figure.savefig(written[-1])
        plt.close(figure)
        lines += ["", f"![{task}]({written[-1].name})"]
    text = "\n".join(lines) + "\n"
    written[0].write_text(text)
    return text, written
