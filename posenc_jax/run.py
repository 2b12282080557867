"""One run, end to end: train, evaluate per length, and write every output. Knows no Hydra.

Files in the run directory:
- config.yaml     the resolved settings (derived values such as eval.max_len filled in)
- events.out.*    TensorBoard: train/loss, train/acc, train/lr, eval/token_acc/len_NNNN,
                  eval/seq_acc/len_NNNN, eval/acc_id, eval/acc_ood, ... and eval/accuracy_vs_length
- metrics.jsonl   the same scalars, one JSON object per log step, append-only
- results.json    the final summary (written last, atomically: its presence means "finished")
- accuracy_vs_length.png
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from posenc_jax.config import Settings
from posenc_jax.errors import ConfigError
from posenc_jax.evaluate import evaluate
from posenc_jax.report import accuracy_figure, format_table
from posenc_jax.run_log import RunLog, json_safe
from posenc_jax.train import train

RESULTS_FILE = "results.json"


def run(settings: Settings, out_dir: str | os.PathLike, show_progress: bool = True) -> dict[str, Any]:
    """Train and evaluate `settings`, write all outputs into `out_dir`, return results.json's dict."""
    run_dir = Path(out_dir).absolute()
    if (run_dir / RESULTS_FILE).exists():
        raise ConfigError(
            f"{run_dir} already holds a finished run ({RESULTS_FILE} exists); refusing to overwrite "
            f"it. Choose another output directory (e.g. hydra.run.dir=...)."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(settings.to_dict(), sort_keys=False))
    title = f"{settings.encoding.name} · {settings.task.name} · {'decoder' if settings.model.causal else 'encoder'}"

    log = RunLog(run_dir)
    try:
        with tqdm(total=settings.train.steps, desc=title, disable=not show_progress, dynamic_ncols=True) as bar:

            def on_log(step: int, scalars: dict[str, float]) -> None:
                log.scalars(step, scalars)
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", acc=f"{scalars['train/acc']:.3f}")

            outcome = train(settings, on_log)
        step = outcome.summary["steps"]
        results: dict[str, Any] = {
            "status": outcome.summary["status"],
            "encoding": settings.encoding.name,
            "task": settings.task.name,
            "config": settings.to_dict(),
            "train": outcome.summary,
            "eval": None,
        }
        if outcome.summary["status"] == "completed":
            evaluation = evaluate(settings, outcome.graphdef, outcome.params)
            results["eval"] = evaluation
            log.scalars(step, _eval_scalars(evaluation))
            figure = accuracy_figure(evaluation, title)
            figure.savefig(run_dir / "accuracy_vs_length.png")
            log.figure("eval/accuracy_vs_length", figure, step)  # closes the figure
            print(format_table(evaluation, title))
        else:
            print(f"Training stopped at step {step}: the loss is not finite (status 'diverged'); "
                  f"no evaluation was run. Lower optim.learning_rate or check the config.")
        results = json_safe(results)  # a diverged loss is NaN; strict JSON says null
        _write_json_atomically(run_dir / RESULTS_FILE, results)
    finally:
        log.close()
    return results


def _eval_scalars(evaluation: dict[str, Any]) -> dict[str, float | None]:
    scalars: dict[str, float | None] = {}
    for n, tok, seq in zip(evaluation["lengths"], evaluation["token_acc"], evaluation["seq_acc"]):
        scalars[f"eval/token_acc/len_{n:04d}"] = tok
        scalars[f"eval/seq_acc/len_{n:04d}"] = seq
    for key in ("acc_id", "acc_ood", "seq_acc_id", "seq_acc_ood"):
        scalars[f"eval/{key}"] = evaluation[key]
    return scalars


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False))
    tmp.replace(path)
