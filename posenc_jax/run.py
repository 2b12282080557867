"""One run, end to end: train, evaluate per length, and write every output. Knows no Hydra.

Files in the run directory:
- config.yaml     the resolved settings (derived values such as eval.max_len filled in)
- events.out.*    TensorBoard: train/loss, train/acc, train/lr, eval/token_acc/len_NNNN,
                  eval/seq_acc/len_NNNN, eval/acc_id, eval/acc_ood, ... and eval/accuracy_vs_length
- metrics.jsonl   the same scalars, one JSON object per log step, append-only
- results.json    the final summary (written last, atomically: its presence means "finished")
- checkpoint/     the trained parameters (orbax), for `posenc-eval`
- accuracy_vs_length.png
- attention_layer<L>.png   with eval.save_attention=true (always in TensorBoard: eval/attention/...)

`posenc-eval` adds results_<tag>.json, accuracy_vs_length_<tag>.png and events under
eval_<tag>/... to the same directory (see `reevaluate.py`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from posenc_jax.checkpoint import save_params
from posenc_jax.config import Settings
from posenc_jax.errors import ConfigError
from posenc_jax.evaluate import attention_maps, evaluate
from posenc_jax.report import accuracy_figure, attention_figure, format_table
from posenc_jax.run_log import RunLog, json_safe
from posenc_jax.train import train

RESULTS_FILE = "results.json"


def run(
    settings: Settings, out_dir: str | os.PathLike, show_progress: bool = True
) -> dict[str, Any]:
    """Train and evaluate `settings`, write every output into `out_dir`; returns results.json."""
    run_dir = Path(out_dir).absolute()
    if (run_dir / RESULTS_FILE).exists():
        raise ConfigError(
            f"{run_dir} already holds a finished run ({RESULTS_FILE} exists); refusing to "
            "overwrite "
            f"it. Choose another output directory (e.g. hydra.run.dir=...)."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(settings.to_dict(), sort_keys=False))
    title = run_title(settings)

    log = RunLog(run_dir)
    try:
        with tqdm(
            total=settings.train.steps, desc=title, disable=not show_progress, dynamic_ncols=True
        ) as bar:

            def on_log(step: int, scalars: dict[str, float]) -> None:
                log.scalars(step, scalars)
                bar.update(step - bar.n)
                bar.set_postfix(
                    loss=f"{scalars['train/loss']:.4f}", acc=f"{scalars['train/acc']:.3f}"
                )

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
            save_params(run_dir, outcome.params)
            results["eval"] = evaluate_and_log(
                settings, outcome.graphdef, outcome.params, run_dir, log, step
            )
        else:
            print(
                f"Training stopped at step {step}: the loss is not finite (status 'diverged'); "
                f"no evaluation was run. Lower optim.learning_rate or check the config."
            )
        results = json_safe(results)  # a diverged loss is NaN; strict JSON says null
        write_json_atomically(run_dir / RESULTS_FILE, results)
    finally:
        log.close()
    return results


def run_title(settings: Settings) -> str:
    mode = "decoder" if settings.model.causal else "encoder"
    return f"{settings.encoding.name} · {settings.task.name} · {mode}"


def evaluate_and_log(
    settings: Settings,
    graphdef: Any,
    params: Any,
    run_dir: Path,
    log: RunLog,
    step: int,
    tag: str = "",
) -> dict[str, Any]:
    """Evaluate, log scalars and pictures under `eval` (or `eval_<tag>`), print the table, and
    return results.json's `eval` section. Shared by a run and its re-evaluations."""
    title = run_title(settings) + (f" · {tag}" if tag else "")
    prefix, suffix = (f"eval_{tag}", f"_{tag}") if tag else ("eval", "")
    evaluation = evaluate(settings, graphdef, params)
    log.scalars(step, _eval_scalars(evaluation, prefix))
    figure = accuracy_figure(evaluation, title)
    figure.savefig(run_dir / f"accuracy_vs_length{suffix}.png")
    log.figure(f"{prefix}/accuracy_vs_length", figure, step)  # closes the figure
    evaluated = [
        n
        for n, acc in zip(evaluation["lengths"], evaluation["token_acc"], strict=True)
        if acc is not None
    ]
    # Validation guarantees that a chosen attention_len is evaluated; None only if nothing was.
    length = settings.eval.attention_len or (evaluated[-1] if evaluated else None)
    if length is not None:
        for layer, weights in enumerate(attention_maps(settings, graphdef, params, length)):
            figure = attention_figure(weights, f"{title} · layer {layer} · input length {length}")
            if settings.eval.save_attention:
                figure.savefig(run_dir / f"attention{suffix}_layer{layer}.png")
            log.figure(f"{prefix}/attention/layer_{layer}", figure, step)
    evaluation["attention_len"] = length
    print(format_table(evaluation, title))
    return evaluation


def _eval_scalars(evaluation: dict[str, Any], prefix: str) -> dict[str, float | None]:
    scalars: dict[str, float | None] = {}
    for n, tok, seq in zip(
        evaluation["lengths"], evaluation["token_acc"], evaluation["seq_acc"], strict=True
    ):
        scalars[f"{prefix}/token_acc/len_{n:04d}"] = tok
        scalars[f"{prefix}/seq_acc/len_{n:04d}"] = seq
    for key in ("acc_id", "acc_ood", "seq_acc_id", "seq_acc_ood"):
        scalars[f"{prefix}/{key}"] = evaluation[key]
    return scalars


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False))
    tmp.replace(path)
