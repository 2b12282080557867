"""Measure training throughput and evaluation compile counts, and print them.

    python scripts/benchmark.py                        # default model, every encoding
    python scripts/benchmark.py --encodings rope nope --steps 1000 task=reverse
    python scripts/benchmark.py --encodings rope --steps 10 model.causal=true task=reverse \
        eval.max_len=64                                # a decoder: greedy against teacher-forced

Extra arguments are Hydra overrides applied to every measured config. Timing excludes the first
dispatch (compilation), which is reported on its own. A decoder is evaluated with each decoding
(`eval.decoding`), on the same parameters; evaluation times include its compilations, as a run
pays them. Speed is measured here, never in tests.
"""

from __future__ import annotations

import argparse
import time

import jax

from posenc_jax.cli import compose_settings
from posenc_jax.decoding import DECODINGS
from posenc_jax.encodings import available
from posenc_jax.evaluate import evaluate
from posenc_jax.train import init_state, make_train_chunk


def measure(overrides: list[str], steps: int) -> dict[str, float]:
    settings = compose_settings(overrides)
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

    measured = {"steps_per_s": dispatches * size / elapsed, "first_dispatch_s": first}
    decodings = DECODINGS if settings.model.causal else ("encoder",)
    for decoding in decodings:
        evaluated = settings
        if settings.model.causal:
            evaluated = compose_settings([*overrides, f"eval.decoding={decoding}"])
        evaluation = evaluate(evaluated, graphdef, state.params)
        measured[f"{decoding}_eval_s"] = evaluation["wall_s"]
        measured[f"{decoding}_eval_compilations"] = evaluation["num_compilations"]
        measured["eval_lengths"] = len(evaluation["lengths"])
    return measured


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
    header = f"{'encoding':<15} {'steps/s':>9} {'1st dispatch s':>15} {'eval lengths':>13}"
    print(header + "  evaluation s (compilations) per decoding")
    for name in args.encodings:
        r = measure([f"encoding={name}", *args.overrides], args.steps)
        decodings = [key.removesuffix("_eval_s") for key in r if key.endswith("_eval_s")]
        per_decoding = "  ".join(
            f"{d} {r[f'{d}_eval_s']:.2f} ({r[f'{d}_eval_compilations']})" for d in decodings
        )
        if "greedy" in decodings:
            per_decoding += (
                f"  greedy/teacher_forced {r['greedy_eval_s'] / r['teacher_forced_eval_s']:.2f}x"
            )
        print(
            f"{name:<15} {r['steps_per_s']:9.1f} {r['first_dispatch_s']:15.2f} "
            f"{r['eval_lengths']:13d}  {per_decoding}"
        )


if __name__ == "__main__":
    main()
