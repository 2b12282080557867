"""Measure training throughput and evaluation compile counts, and print them.

    python scripts/benchmark.py                        # default model, every encoding
    python scripts/benchmark.py --encodings rope nope --steps 1000 task=reverse

Extra arguments are Hydra overrides applied to every measured config. Timing excludes the first
dispatch (compilation), which is reported on its own. Speed is measured here, never in tests.
"""

from __future__ import annotations

import argparse
import time

import jax
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from posenc_jax.cli import config_dir
from posenc_jax.compilation import CompilationCounter
from posenc_jax.config import settings_from_dict
from posenc_jax.encodings import available
from posenc_jax.evaluate import evaluate
from posenc_jax.train import init_state, make_train_chunk


def measure(overrides: list[str], steps: int) -> dict[str, float]:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    settings = settings_from_dict(OmegaConf.to_container(cfg, resolve=True))
    graphdef, state, optimizer = init_state(settings)
    size = settings.train.steps_per_dispatch
    chunk = make_train_chunk(settings, graphdef, optimizer, size)

    start = time.perf_counter()
    state, _ = chunk(state)
    jax.block_until_ready(state)
    first = time.perf_counter() - start

    dispatches = max(1, steps // size)
    start = time.perf_counter()
    for _ in range(dispatches):
        state, _ = chunk(state)
    jax.block_until_ready(state)
    elapsed = time.perf_counter() - start

    with CompilationCounter() as compiled:
        evaluation = evaluate(settings, graphdef, state.params)
    return {
        "steps_per_s": dispatches * size / elapsed,
        "first_dispatch_s": first,
        "eval_s": evaluation["wall_s"],
        "eval_lengths": len(evaluation["lengths"]),
        "eval_compilations": compiled.count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encodings", nargs="*", default=available())
    parser.add_argument("--steps", type=int, default=500, help="timed steps per encoding")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. task=reverse")
    args = parser.parse_args()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; overrides: "
        f"{args.overrides or 'none'}"
    )
    print(
        f"{'encoding':<15} {'steps/s':>9} {'1st dispatch s':>15} {'eval s':>8} "
        f"{'eval lengths':>13} {'eval compiles':>14}"
    )
    for name in args.encodings:
        r = measure([f"encoding={name}", *args.overrides], args.steps)
        print(
            f"{name:<15} {r['steps_per_s']:9.1f} {r['first_dispatch_s']:15.2f} {r['eval_s']:8.2f} "
            f"{r['eval_lengths']:13d} {r['eval_compilations']:14d}"
        )


if __name__ == "__main__":
    main()
