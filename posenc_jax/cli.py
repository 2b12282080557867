"""The commands: `posenc-train` (and `python -m posenc_jax`), `posenc-eval`, `posenc-inspect`,
`posenc-report`.

posenc-train: Hydra composes `configs/train.yaml` with the command-line overrides; this module
turns the result into plain `Settings` (validated before anything compiles) and calls `run`.
Unknown config groups or keys are rejected by Hydra itself, with its list of valid choices.

posenc-eval: `run_dir=<dir> [tag=<name>] [key=value ...]`, see `reevaluate.py`. It starts from
a finished run's own resolved config, so it needs no Hydra composition.

posenc-inspect: Hydra composes `configs/inspect.yaml` (an encoding, a model, a length); see
`inspection.py`.

posenc-report: `<folder> [--out DIR] [--threshold T]`, see `study_report.py`.

Bad values end with a one-paragraph `ConfigError` message and exit status 2, with its
traceback too under HYDRA_FULL_ERROR=1 (Hydra's own switch for full errors).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import hydra
import jax
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from posenc_jax.compilation import enable_persistent_cache
from posenc_jax.config import Settings, settings_from_dict
from posenc_jax.distributed import writes_outputs
from posenc_jax.encodings import make_encoding
from posenc_jax.errors import ConfigError
from posenc_jax.inspection import InspectOptions, inspect_encoding, pictures_for
from posenc_jax.model_config import ModelConfig
from posenc_jax.overrides import check_overrides
from posenc_jax.reevaluate import reevaluate
from posenc_jax.run import run
from posenc_jax.spec import construct
from posenc_jax.study_report import DEFAULT_THRESHOLD, write_report
from posenc_jax.train import Preempted


def config_dir() -> str:
    """`configs/` inside the installed package (wheel), else the repository's top-level one."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"posenc-jax configs not found beside {package}")


def seed_label(seed: Any, num_seeds: Any) -> str:
    """The seeds of a run in a sweep folder's name: seed3, or seeds3-5 for train.num_seeds=3.
    Hydra resolves it before the settings are validated: values that are not whole numbers
    give a plain label here, and validation then refuses them with its own message."""
    if type(seed) is int and type(num_seeds) is int and num_seeds > 1:
        return f"seeds{seed}-{seed + num_seeds - 1}"
    return f"seed{seed}"


def compose_settings(overrides: Sequence[str]) -> Settings:
    """configs/train.yaml composed with `overrides` (Hydra's syntax) and validated: the run
    posenc-train would start, for code that runs it in process (benchmarks, tests). Raises
    ConfigError for a bad value, and Hydra's own errors for an unknown group or key."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return settings_from_dict(_plain(cfg))


# ${seed_label:${seed},${train.num_seeds}} in configs/train.yaml.
OmegaConf.register_new_resolver("seed_label", seed_label, replace=True)


# The folders on the run folder's path that did not exist before Hydra ran (set by the
# command's entry point, read when it refuses): Hydra makes them before this command can
# validate anything.
_FOLDERS_HYDRA_MAKES: list[Path] = []


def _remove_folders_hydra_made() -> None:
    """After a refusal, remove the folders Hydra made for the run, innermost first, while they
    are empty: leave no folder behind, and touch none that existed."""
    for folder in reversed(_FOLDERS_HYDRA_MAKES):
        sweep_record = folder / "multirun.yaml"  # what Hydra writes in a sweep folder it made
        if sweep_record.is_file() and [p.name for p in folder.iterdir()] == [sweep_record.name]:
            sweep_record.unlink()
        if not folder.is_dir() or any(folder.iterdir()):
            return
        folder.rmdir()


# The shell's status for a process ended by SIGTERM (128 + 15): a stopped run is not a success.
PREEMPTED_EXIT_STATUS = 143


def _train(cfg: DictConfig) -> float | None:
    def start():
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            return train_into(run_dir)
        except ConfigError:
            # A job of a sweep also has its own folder, which Hydra names by the job's number.
            in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
            if in_sweep and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
            raise

    def train_into(run_dir: Path):
        hydra_config = HydraConfig.get()
        if hydra_config.mode == RunMode.RUN and hydra_config.sweeper.params:
            swept = ", ".join(f"{k}={v}" for k, v in hydra_config.sweeper.params.items())
            raise ConfigError(
                f"This config defines a sweep ({swept}), but posenc-train was run without -m, "
                f"so it would train one run only. Add -m to run the study "
                f"({shlex.join(['posenc-train', '-m', *hydra_config.overrides.task])})."
            )
        raw = _plain(cfg)
        overwrite = raw.pop("overwrite", False)
        if type(overwrite) is not bool:
            raise ConfigError(f"overwrite={overwrite!r} must be true or false.")
        settings = settings_from_dict(raw)
        # The command that reproduces this one run: in a sweep, this job's overrides with -m
        # (a study config refuses to run without it), not the whole sweep's.
        in_sweep = hydra_config.mode == RunMode.MULTIRUN
        command = shlex.join(
            ["posenc-train", *(["-m"] if in_sweep else []), *hydra_config.overrides.task]
        )
        try:
            # A sweep run again keeps its finished jobs and resumes the others.
            results = run(
                settings, run_dir, command=command, overwrite=overwrite, keep_finished=in_sweep
            )
        except Preempted as stopped:
            resumes = (
                f"a rerun resumes from the checkpoint of step {stopped.resume_from}"
                if stopped.resume_from
                else "a rerun starts again from step 0 (no checkpoint worth keeping)"
            )
            print(
                f"posenc-train: stopped by SIGTERM at step {stopped.step}; {resumes}. "
                f"{_resume_hint(hydra_config, command, run_dir)}",
                file=sys.stderr,
            )
            sys.exit(PREEMPTED_EXIT_STATUS)
        if writes_outputs():
            print(f"run folder: {run_dir}")
        return results

    try:
        results = _run_command("posenc-train", start)
    finally:
        # A sweep runs its jobs in this one process (Hydra's basic launcher): the next job
        # must not inherit this one's compiled programs (each run builds its own, so they would
        # only pile up in memory). The persistent on-disk cache still serves them.
        jax.clear_caches()
    # Hydra sweepers can optimise this; a run with a diverged seed has no score, not the mean
    # of the seeds that survived.
    if results["status"] != "completed":
        return None
    return results["eval"].get("acc_ood")


def hydra_quoted(value: str) -> str:
    """`value` as Hydra's override grammar reads it back: as it is when it holds only plain
    path characters, else in single quotes (a comma would make a sweep, a space or a non-ASCII
    letter a syntax error)."""
    if re.fullmatch(r"[A-Za-z0-9_./:+@%~-]+", value):
        return value
    # Backslashes escape only before a quote (or the closing one): those are doubled.
    escaped = re.sub(r"(\\+)(?='|$)", lambda run: run[1] * 2, value).replace("'", "\\'")
    return f"'{escaped}'"


def _resume_hint(hydra_config: Any, command: str, run_dir: Path) -> str:
    """The command that resumes a stopped run: the same one into the same folder. For a job
    of a sweep, the whole sweep again into the same sweep folder: Hydra places a job by its
    number in the sweep, and the sweep keeps its finished jobs."""
    if hydra_config.mode != RunMode.MULTIRUN:
        folder = shlex.quote(f"hydra.run.dir={hydra_quoted(str(run_dir))}")
        return f"Run the same command into the same folder to resume it: {command} {folder}"
    argv = sys.argv[1:]
    if not any(arg.startswith("hydra.sweep.dir=") for arg in argv):
        argv = [*argv, f"hydra.sweep.dir={hydra_quoted(str(hydra_config.sweep.dir))}"]
    return (
        f"Run the same sweep into the same folder to resume it (its finished runs are kept): "
        f"{shlex.join(['posenc-train', *argv])}"
    )


def _with_overrides_checked(
    command: str, config_name: str, hydra_main: Callable[[], Any]
) -> Callable[[], None]:
    """`hydra_main` behind `overrides.check_overrides`: the mistakes Hydra would answer with a
    raw exception, or without the valid choices, end in the command's one paragraph."""

    def checked_main() -> None:
        try:
            _FOLDERS_HYDRA_MAKES[:] = check_overrides(config_dir(), config_name, sys.argv[1:])
        except ConfigError as error:
            _refuse(command, error)
        hydra_main()

    return checked_main


main = _with_overrides_checked(
    "posenc-train",
    "train",
    hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")(_train),
)

EVAL_USAGE = """usage: posenc-eval run_dir=<dir> [tag=<name>] [key=value ...]

Evaluate a finished posenc-train run again, without retraining. Overrides may change eval.*
(e.g. eval.max_len=256), train.sharding and, for rope and xpos, encoding.scaling /
encoding.scale / encoding.original_max_len. Writes results_<tag>.json and TensorBoard events
into the run's directory; the tag defaults to the overrides."""


def evaluate_main(argv: list[str] | None = None) -> None:
    """`posenc-eval`."""
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(EVAL_USAGE)
        sys.exit(0)
    special: dict[str, str] = {}
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in ("run_dir", "tag"):
            if key in special or not value:
                problem = "is given twice" if key in special else "is empty"
                _usage_error(f"{key}= {problem}; give it once, with a value.")
            special[key] = value
    if "run_dir" not in special:
        _usage_error("run_dir=<dir> is required.")
    overrides = [arg for arg in argv if arg.partition("=")[0] not in special]
    _run_command(
        "posenc-eval", lambda: reevaluate(special["run_dir"], overrides, special.get("tag"))
    )


def report_main(argv: list[str] | None = None) -> None:
    """`posenc-report <folder> [--out DIR] [--threshold T]`: see `study_report.py`."""
    parser = argparse.ArgumentParser(
        prog="posenc-report",
        description="Turn the runs below a folder (a sweep, or several) into one table with "
        "mean ± std over seeds (report.md, report.csv) and one accuracy-vs-length plot per task.",
    )
    parser.add_argument("folder", type=Path, help="a sweep folder, e.g. multirun/decoder_study")
    parser.add_argument("--out", type=Path, help="where to write the report (default: folder)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="accuracy for the 'longest length at or above' column (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder; pass the folder of a sweep.")
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold={args.threshold} must lie in [0, 1].")
    try:
        text, written = write_report(args.folder, args.out, args.threshold)
    except ConfigError as error:
        _refuse("posenc-report", error)
    except OSError as error:
        print(f"posenc-report: cannot write the report: {error}", file=sys.stderr)
        sys.exit(2)
    print(text, end="")
    print(f"wrote {', '.join(path.name for path in written)} in {written[0].parent.absolute()}")


def _usage_error(message: str) -> NoReturn:
    print(f"posenc-eval: {message}\n\n{EVAL_USAGE}", file=sys.stderr)
    sys.exit(2)


def _inspect(cfg: DictConfig) -> None:
    def start():
        raw = _plain(cfg)
        model = construct(ModelConfig, raw["model"], "section 'model'", prefix="model")
        model.validate()
        spec = make_encoding(raw["encoding"])
        options = {key: raw[key] for key in ("length", "trained_len", "seed", "out_dir")}
        options = construct(InspectOptions, options, "posenc-inspect")  # checks the types
        out_dir = Path(options.out_dir).absolute()
        summary = inspect_encoding(
            spec, model, options.length, options.trained_len, out_dir, options.seed
        )
        print(summary)
        print(f"wrote {', '.join([*pictures_for(spec), 'summary.txt'])} in {out_dir}")

    _run_command("posenc-inspect", start)


inspect_main = _with_overrides_checked(
    "posenc-inspect",
    "inspect",
    hydra.main(version_base="1.3", config_path=config_dir(), config_name="inspect")(_inspect),
)


def _plain(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as plain, resolved Python containers: nothing past here sees Hydra."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)  # a composed config is always a mapping
    return {str(key): value for key, value in raw.items()}


def _run_command(command: str, start):
    """start() with the compilation cache on; a ConfigError removes the folders Hydra made for
    the command and ends it with its paragraph."""
    # JAX logs a backend warning on CPU-only machines, and orbax (through absl) every step of a
    # checkpoint save at INFO, which Hydra's logging shows: noise for this tool's users.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        enable_persistent_cache()
        return start()
    except ConfigError as error:
        _remove_folders_hydra_made()
        _refuse(command, error)


def _refuse(command: str, error: ConfigError) -> NoReturn:
    """End `command` with the error's paragraph and exit status 2; with its traceback first
    under HYDRA_FULL_ERROR=1, Hydra's switch for full errors."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        traceback.print_exception(error)
    print(f"{command}: {error}", file=sys.stderr)
    sys.exit(2)
