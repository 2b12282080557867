"""One run, end to end: train, evaluate per length, and write every output. Knows no Hydra.

The files of a run folder, and the results schema, are defined in `outputs.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm.auto import tqdm

from posenc_jax.checkpoint import save_params
from posenc_jax.config import Settings
from posenc_jax.distributed import initialize, require_same_run, writes_outputs
from posenc_jax.errors import ConfigError
from posenc_jax.outputs import (
    CONFIG_FILE,
    RESULTS_FILE,
    record_evaluation,
    reserve_open_files,
    results_document,
    run_logs,
    run_title,
    write_results,
)
from posenc_jax.provenance import provenance
from posenc_jax.sharding import device_mesh
from posenc_jax.train import train


def run(
    settings: Settings,
    out_dir: str | os.PathLike,
    show_progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train and evaluate `settings`, write every output into `out_dir`; returns results.json.
    `command` is recorded as the one that reproduces this run (see `provenance`).

    With train.distributed, every process of the run calls this with the same arguments; only
    process 0 writes (`distributed.py`).

    Raises ConfigError, before anything is written, if `out_dir` already holds a finished run,
    if the process may not open enough files for train.num_seeds replicas' logs, if
    train.distributed finds no cluster, or if the visible devices cannot split the work as
    train.sharding asks."""
    run_dir = Path(out_dir).absolute()
    if (run_dir / RESULTS_FILE).exists():
        raise ConfigError(
            f"{run_dir} already holds a finished run ({RESULTS_FILE} exists); refusing to "
            f"overwrite it. Choose another output directory: hydra.run.dir=... for one run, or "
            f"hydra.sweep.dir=... for a sweep."
        )
    reserve_open_files(settings)
    initialize(settings)  # before any device is touched
    require_same_run(settings, run_dir)
    device_mesh(settings)  # the devices can split the work: checked before anything is written
    origin = provenance(command)  # the code as it starts, before a long run lets it change
    writer = writes_outputs()
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(settings.to_dict(), sort_keys=False))

    with run_logs(run_dir, settings, write=writer) as logs:
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

            outcome = train(settings, on_log)
        step = outcome.summary["steps"]
        completed = [s["status"] == "completed" for s in outcome.seed_summaries]
        evaluations: list[dict[str, Any] | None] = [None] * len(completed)
        if any(completed):
            save_params(run_dir, outcome.params)  # by every process: each saves its pieces
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
                f"The loss is not finite ({', '.join(diverged)}): status 'diverged', and "
                f"{'it was' if len(diverged) == 1 else 'they were'} not evaluated. Lower "
                f"optim.learning_rate or check the config."
            )
        results = results_document(
            settings, outcome.summary, outcome.seed_summaries, evaluations, origin
        )
        if writer:
            write_results(run_dir, results)
    return results
