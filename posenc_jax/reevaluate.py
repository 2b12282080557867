"""Evaluate a finished run again (`posenc-eval`), longer or under another RoPE scaling rule,
without retraining.

    posenc-eval run_dir=runs/rope_word_order eval.max_len=256
    posenc-eval run_dir=runs/rope_word_order encoding.scaling=yarn encoding.scale=4 tag=yarn4

The run's own resolved `config.yaml` is reloaded and the overrides applied to it; only settings
that no trained parameter depends on may change: `eval.*`, `train.sharding` (the devices
evaluation is split over), and the encoding's `evaluation_fields` (RoPE's scaling, scale and
original_max_len). Anything else (the
architecture, the task and its vocabulary, the seed, training) would need retraining and is a
`ConfigError`. The parameters come from the run's checkpoint.

Each re-evaluation has a tag (default: its overrides, shell-safe: `eval.max_len=256` gives
`max_len-256`) and writes, next
to the original outputs and never over them: results_<tag>.json (the schema of results.json),
accuracy_vs_length_<tag>.png, TensorBoard scalars and images under eval_<tag>/..., and lines in
metrics.jsonl, all at the run's final training step. With unchanged settings it reproduces the
original evaluation exactly.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from posenc_jax.checkpoint import restore_params
from posenc_jax.config import ADDED_SETTINGS, Settings, settings_from_dict
from posenc_jax.encodings import REGISTRY as ENCODINGS
from posenc_jax.errors import ConfigError, described
from posenc_jax.outputs import (
    CONFIG_FILE,
    RESULTS_FILE,
    record_evaluation,
    reserve_open_files,
    results_document,
    results_file,
    run_logs,
    write_results,
)
from posenc_jax.provenance import provenance
from posenc_jax.seeds import seeds_of
from posenc_jax.sharding import device_mesh, place_state

# Safe unquoted in a shell, in a file name and in a TensorBoard tag.
_TAG = re.compile(r"^[A-Za-z0-9._+-]+$")
MAX_TAG_LENGTH = 100  # results_<tag>.json stays far below a file system's 255-byte limit


def reevaluate(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    tag: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the run in `run_dir` again with `overrides` ("key=value" strings); returns and
    writes the new results (results_<tag>.json). Raises ConfigError, before anything is
    evaluated or written, for a folder without a finished run, a change that needs retraining,
    a tag that cannot name a file, or a tag already used."""
    run_dir = Path(run_dir).absolute()
    original = _finished_results(run_dir)
    stored = _stored_config(run_dir)
    changes = _parse_overrides(overrides)
    _refuse_changes(changes, stored)
    tag = tag or default_tag(overrides)
    if not _TAG.match(tag) or len(tag) > MAX_TAG_LENGTH:
        raise ConfigError(
            f"tag={tag!r} cannot name a file safely; use at most {MAX_TAG_LENGTH} letters, "
            f"digits and . _ + - (e.g. tag=yarn4)."
        )
    out_file = run_dir / results_file(tag)
    if out_file.exists():
        raise ConfigError(
            f"{out_file} already exists; refusing to overwrite it. Choose another tag=<name>."
        )

    raw = copy.deepcopy(stored)
    for key, value in changes.items():
        section, dot, field = key.partition(".")
        if dot:
            raw[section][field] = value
        else:  # a top-level key (seed), accepted only at its stored value
            raw[key] = value
    # posenc-eval runs in one process, whichever processes trained the run (train.distributed).
    raw["train"]["distributed"] = False
    settings = settings_from_dict(raw)
    # This evaluation's own code and command, and those that trained the run (null before
    # results.json recorded them).
    origin = {**provenance(), "trained": original.get("provenance")}
    seed_summaries = _seed_summaries(original, settings)
    completed = [summary["status"] == "completed" for summary in seed_summaries]
    if not any(completed):
        raise ConfigError(
            f"No seed of the run in {run_dir} completed training ({RESULTS_FILE}), so it has no "
            f"trained parameters to evaluate."
        )
    reserve_open_files(settings)
    mesh = device_mesh(settings, training=False)  # the devices can split it: before writing
    graphdef, params = restore_params(run_dir, settings)
    params = place_state(params, mesh)
    step = max(summary["steps"] for summary in seed_summaries)  # the last step trained
    with run_logs(run_dir, settings) as logs:
        evaluations = record_evaluation(
            settings, graphdef, params, run_dir, logs, step, completed, tag, show_progress
        )
    results = results_document(settings, original["train"], seed_summaries, evaluations, origin)
    print(f"wrote {write_results(run_dir, results, tag)}")
    return results


def default_tag(overrides: Sequence[str]) -> str:
    """A shell-safe tag naming the overrides: eval.max_len=256 -> max_len-256,
    encoding.scaling=yarn encoding.scale=4 -> scaling-yarn_scale-4; no overrides -> rerun."""
    parts = []
    for text in overrides:
        key, _, value = text.partition("=")
        field = key.split(".")[-1]  # the fields of eval.* and encoding.* have distinct names
        parts.append(f"{field}-{re.sub(r'[^A-Za-z0-9._+-]', '-', value)}")
    return "_".join(parts) or "rerun"


def allowed_overrides(encoding_name: str) -> list[str]:
    """The keys a re-evaluation of a run trained with this encoding may change."""
    return ["eval.*", "train.sharding"] + [
        f"encoding.{field}" for field in ENCODINGS[encoding_name].evaluation_fields
    ]


def _seed_summaries(results: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """Each replica's training summary, as `train.train` gives it, from the run's results;
    ConfigError unless there is one per seed of the run, in the order of its seeds (seed,
    seed + 1, ...), each with a status and a whole number of steps: a re-evaluation must not
    label one seed's numbers with another's."""
    num_seeds = settings.train.num_seeds
    try:
        if num_seeds == 1:
            summaries = [{"seed": settings.seed, **results["train"]}]
        else:
            summaries = [
                {"seed": s["seed"], "status": s["status"], **s["train"]} for s in results["seeds"]
            ]
        listed = [summary.get("seed") for summary in summaries]
        # Compared by type too: True == 1 and 1.0 == 1 in Python, but neither is seed 1.
        if [(type(seed), seed) for seed in listed] != [(int, seed) for seed in seeds_of(settings)]:
            raise ValueError(f"seeds {listed} are not the run's seeds {seeds_of(settings)}")
        for summary in summaries:
            if type(summary.get("steps")) is not int or not isinstance(summary.get("status"), str):
                raise ValueError(f"seed {summary['seed']} has no status or whole number of steps")
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(
            f"{RESULTS_FILE} lacks its training summaries or they do not add up "
            f"({type(error).__name__}: {error}); nothing was evaluated. Train the run again with "
            f"posenc-train."
        ) from error
    return summaries


def _finished_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} holds no finished run ({RESULTS_FILE} is missing); pass the directory of a "
            f"completed posenc-train run as run_dir=<dir>."
        )
    results = _read_document(path, json.loads)
    # A multi-seed run with some replicas diverged still has the others to evaluate.
    replicas = results.get("seeds") if isinstance(results, dict) else None
    statuses = (
        [s.get("status") for s in replicas if isinstance(s, dict)]
        if isinstance(replicas, list)
        else []
    )
    if not isinstance(results, dict) or (
        results.get("status") != "completed" and "completed" not in statuses
    ):
        status = results.get("status") if isinstance(results, dict) else None
        raise ConfigError(
            f"The run in {run_dir} did not complete (status {status!r} in {RESULTS_FILE}), so "
            f"it has no trained parameters to evaluate."
        )
    return results


def _stored_config(run_dir: Path) -> dict[str, Any]:
    """The run's own resolved settings (config.yaml), as the run wrote them."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} has {RESULTS_FILE} but no {CONFIG_FILE}, so the settings it was trained "
            f"with are unknown; nothing was evaluated. Train it again with posenc-train."
        )
    stored = _read_document(path, yaml.safe_load)
    encoding = stored.get("encoding") if isinstance(stored, dict) else None
    if not isinstance(encoding, dict) or encoding.get("name") not in ENCODINGS:
        raise ConfigError(
            f"{path} is not a posenc-train config (it names no known encoding); nothing was "
            f"evaluated. Train the run again with posenc-train."
        )
    return _with_settings_added_since(stored)


def _with_settings_added_since(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored settings, with those added to the harness after the run was trained set to
    what it used then (`config.ADDED_SETTINGS`, and eval.decoding: decoders were scored
    teacher-forced before it existed), so that a re-evaluation without overrides reproduces it
    and the new settings can be overridden."""
    model, evaluation = stored.get("model"), stored.get("eval")
    if isinstance(model, dict) and isinstance(evaluation, dict):
        was_decoder = model.get("causal") is True
        evaluation.setdefault("decoding", "teacher_forced" if was_decoder else None)
    for key, value in ADDED_SETTINGS.items():
        section, field = key.split(".")
        if isinstance(stored.get(section), dict):
            stored[section].setdefault(field, value)
    return stored


def _read_document(path: Path, parse: Callable[[str], Any]) -> Any:
    """parse(path's text); a ConfigError naming the file if it cannot be read or parsed."""
    try:
        return parse(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        raise ConfigError(
            f"{path} is unreadable ({described(error)}); nothing was evaluated and "
            f"no file was changed. Train the run again with posenc-train."
        ) from error


def _parse_overrides(texts: Sequence[str]) -> dict[str, Any]:
    """ "key=value" strings as {key: value}, each value read as YAML ("256" -> 256, "yarn" ->
    "yarn", "null" -> None). ConfigError for a text that is not key=value, a key given twice
    (the evaluation would not be the one its tag names), or Hydra's +/~/++ prefixes, which
    posenc-eval does not take: it changes settings of the stored config, never adds any."""
    changes: dict[str, Any] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key or not value.strip():
            # An empty value would read as null, where posenc-train refuses it: say null.
            raise ConfigError(
                f"Override {text!r} is not of the form key=value (e.g. eval.max_len=256; "
                f"{key or 'key'}=null for none)."
            )
        if key[0] in "+~":
            raise ConfigError(
                f"Override {text!r} starts with Hydra's {key[0]!r}, which posenc-eval does not "
                f"take: it changes settings the run's {CONFIG_FILE} already has. Write "
                f"{key.lstrip('+~')}={value}."
            )
        if key in changes:
            raise ConfigError(
                f"{key} is given twice ({key}={changes[key]!r} and {text}); give it once."
            )
        changes[key] = yaml.safe_load(value)
    return changes


def _refuse_changes(changes: dict[str, Any], stored: dict[str, Any]) -> None:
    """Unknown keys, and changes to keys the trained parameters depend on, are ConfigErrors
    (restating a stored value, e.g. train.num_seeds=3 for a 3-seed run, changes nothing)."""
    encoding_name = stored["encoding"]["name"]
    allowed = allowed_overrides(encoding_name)
    sections = [key for key in changes if isinstance(stored.get(key), dict)]
    if sections:
        key = sections[0]
        raise ConfigError(
            f"{key}={changes[key]!r} names the whole section {key!r}; a re-evaluation changes "
            f"one setting at a time ({key}.<key>=<value>), and a re-evaluation of this "
            f"{encoding_name!r} run may change {allowed}."
        )
    unknown = [key for key in changes if not _is_setting(stored, key)]
    if unknown:
        raise ConfigError(
            f"Unknown key(s) {unknown}: the run's {CONFIG_FILE} has no such setting. A "
            f"re-evaluation of this {encoding_name!r} run may change {allowed}."
        )
    refused = [
        key
        for key, value in changes.items()
        if not (key.startswith("eval.") or key in allowed) and value != _stored_value(stored, key)
    ]
    if refused:
        raise ConfigError(
            f"A re-evaluation cannot change {refused}: the trained parameters depend on it, so it "
            f"needs retraining (posenc-train with the new value). A re-evaluation of this "
            f"{encoding_name!r} run may change {allowed}."
        )


def _stored_value(stored: dict[str, Any], key: str) -> Any:
    """The stored value of `key` (section.field, or a top-level key), which `_is_setting`."""
    section, dot, field = key.partition(".")
    return stored[section][field] if dot else stored[key]


def _is_setting(stored: dict[str, Any], key: str) -> bool:
    """Whether `key` (section.field, or a top-level key such as seed) is in the stored config."""
    section, dot, field = key.partition(".")
    if not dot:
        return key in stored and not isinstance(stored[key], dict)
    return isinstance(stored.get(section), dict) and field in stored[section]
