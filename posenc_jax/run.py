"""One run, end to end: train, evaluate per length, and write every output. Knows no Hydra.

The files of a run folder, and the results schema, are defined in `outputs.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from posenc_jax.checkpoint import save_params
from posenc_jax.config import Settings
from posenc_jax.errors import ConfigError
from posenc_jax.outputs import (
    CONFIG_FILE,
    RESULTS_FILE,
    record_evaluation,
    results_document,
    run_title,
    write_results,
)
from posenc_jax.provenance import provenance
from posenc_jax.run_log import RunLog
from posenc_jax.train import train


def run(
    settings: Settings,
    out_dir: str | os.PathLike,
    show_progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train and evaluate `settings`, write every output into `out_dir`; returns results.json.
    `command` is recorded as the one that reproduces this run (see `provenance`).

    Raises ConfigError, before anything is written, if `out_dir` already holds a finished run."""
    run_dir = Path(out_dir).absolute()
    if (run_dir / RESULTS_FILE).exists():
        raise ConfigError(
            f"{run_dir} already holds a finished run ({RESULTS_FILE} exists); refusing to "
            f"overwrite it. Choose another output directory (e.g. hydra.run.dir=...)."
        )
    origin = provenance(command)  # the code as it starts, before a long run lets it change
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(settings.to_dict(), sort_keys=False))

    log = RunLog(run_dir)
    try:
        with tqdm(
            total=settings.train.steps,
            desc=run_title(settings),
            disable=not show_progress,
            dynamic_ncols=True,
        ) as bar:

            def on_log(step: int, scalars: dict[str, float]) -> None:
                log.scalars(step, scalars)
                bar.update(step - bar.n)
                bar.set_postfix(
                    loss=f"{scalars['train/loss']:.4f}", acc=f"{scalars['train/acc']:.3f}"
                )

            outcome = train(settings, on_log)
        step = outcome.summary["steps"]
        evaluation = None
        if outcome.summary["status"] == "completed":
            save_params(run_dir, outcome.params)
            evaluation = record_evaluation(
                settings,
                outcome.graphdef,
                outcome.params,
                run_dir,
                log,
                step,
                show_progress=show_progress,
            )
        else:
            print(
                f"Training stopped at step {step}: the loss is not finite (status 'diverged'); "
                f"no evaluation was run. Lower optim.learning_rate or check the config."
            )
        results = results_document(settings, outcome.summary, evaluation, origin)
        write_results(run_dir, results)
    finally:
        log.close()
    return results
