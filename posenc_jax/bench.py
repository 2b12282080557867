"""posenc-bench: how fast this machine trains and evaluates, as numbers to compare.

    posenc-bench                      # the whole suite
    posenc-bench --quick              # a smoke run of two cases: 45-75 s measured on 2 cores
    posenc-bench --only paper-rope end-to-end --json bench.json
    posenc-bench --only paper-rope --set train.length_buckets=4   # overrides for every case

Cases (`CASES`): the default job; the "paper config" of Ruoss et al. (2023) (encoder, 5 layers,
d_model 64, 8 heads, batch 128, reverse with lengths 1-40, i.e. 80 slots) for nope, rope, alibi,
t5 and sinusoidal; that config with `train.num_seeds=8`; and `end-to-end`, a whole RoPE run of
the paper config (1000 steps, then evaluation at every length to 100), as posenc-train runs it.

For each step case it measures:
- compile_s: tracing, lowering and compiling one chunk of `train.steps_per_dispatch` steps;
- step_s: seconds per step at steady state, the median over `repeats` timed windows, each
  ended by `block_until_ready`, after a warm-up chunk; steps_per_s and tokens_per_s from it
  (tokens: every slot computed, padding included, of every replica);
- flops_per_step: the model's dense matmuls, counted analytically (`train_step_flops`; with
  train.length_buckets, each bucket's examples at its width), and XLA's own count of the
  compiled step (`cost_analysis`, which includes the encodings' terms, the optimizer and
  elementwise work);
- flops_per_s and matmul_fraction: the analytic count over step_s, and that as a fraction of a
  dense matmul measured in the same process (`matmul_rate`: fp32 1024^3 on CPU, bf16 8192^3 on
  an accelerator);
- eval_s and eval_compilations: the run's per-length evaluation (`evaluate_seeds`), compilation
  included, as a run pays it; eval_tokens_per_s over the padded slots it ran;
- eval_over_forward: seconds per token of evaluation at the longest training length over those
  of a training batch's forward pass, at the same padded width (`per_token_costs`).

No persistent compilation cache is used, so compile times are those of a first run. Nothing here
asserts speed; `--check` only asserts that every figure is sane (`sanity_problems`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from hydra.errors import HydraException

from posenc_jax import metrics, seeds
from posenc_jax.cli import compose_settings
from posenc_jax.config import Settings
from posenc_jax.errors import ConfigError
from posenc_jax.evaluate import evaluate_seeds, length_work, make_eval_fn
from posenc_jax.length_buckets import LengthBucket, run_buckets
from posenc_jax.op_profile import OpTime, format_profile, profile_ops
from posenc_jax.provenance import provenance
from posenc_jax.run import run
from posenc_jax.sharding import device_mesh, place_state
from posenc_jax.train import (
    TrainState,
    batch_counts,
    bucket_batch,
    init_state,
    make_train_chunk,
)

# Ruoss et al. (2023), "Randomized Positional Encodings Boost Length Generalization of
# Transformers": their encoder at the sizes of their experiments, on reverse_string.
PAPER_CONFIG = (
    "task=reverse",
    "task.train_min_len=1",
    "task.train_max_len=40",
    "model.num_layers=5",
    "model.d_model=64",
    "model.num_heads=8",
    "train.batch_size=128",
    "eval.max_len=100",
)


@dataclass(frozen=True)
class Case:
    """One benchmark configuration: Hydra overrides of configs/train.yaml. `end_to_end` cases
    are timed as a whole run; the others as a training step and an evaluation."""

    name: str
    overrides: tuple[str, ...]
    end_to_end: bool = False


CASES = (
    Case("default", ()),
    *(
        Case(f"paper-{name}", (*PAPER_CONFIG, f"encoding={name}"))
        for name in ("nope", "rope", "alibi", "t5", "sinusoidal")
    ),
    Case("paper-rope-seeds8", (*PAPER_CONFIG, "encoding=rope", "train.num_seeds=8")),
    Case("end-to-end", (*PAPER_CONFIG, "encoding=rope", "train.steps=1000"), end_to_end=True),
)

# --quick: two step cases, short chunks and a small evaluation, to exercise every code path.
QUICK_CASES = ("default", "paper-rope")
QUICK_OVERRIDES = ("train.steps_per_dispatch=2", "eval.examples_per_length=16")


PROFILE_TOP = 20  # operations kept per profiled case


@dataclass(frozen=True)
class Options:
    repeats: int = 5  # timed windows per case; the median is reported
    dispatches: int = 3  # chunks per timed window
    extra: tuple[str, ...] = ()  # overrides added to every case
    profile: bool = False  # also profile the step per XLA operation (`op_profile.py`)


def bucket_widths(settings: Settings) -> list[tuple[int, int]]:
    """(examples, padded slots) of each training length bucket of a step (`length_buckets.py`):
    one bucket of train.batch_size examples at task.train_max_len's width unless
    train.length_buckets > 1."""
    return [(b.examples, settings.task.sequence_len(b.max_len)) for b in run_buckets(settings)]


def train_step_flops(settings: Settings) -> float:
    """FLOPs of one training step's dense matmuls, all replicas: 3 × the forward pass (the
    backward pass costs twice the forward), with one multiply-add counted as 2 FLOPs; with
    length buckets, each bucket's examples at its own width.

    Per example of T slots, d = d_model, r = mlp_ratio, per layer: the q, k, v and output
    projections 8·T·d², the MLP 4·r·T·d², the scores QKᵀ and the weighted values 4·T²·d; then
    the output head 2·T·d·outputs. Embedding lookups, norms, softmax and an encoding's own
    terms are not counted (XLA's count includes them)."""
    model, task = settings.model, settings.task
    d = model.d_model

    def forward(slots: int) -> int:
        per_layer = 8 * slots * d * d + 4 * model.mlp_ratio * slots * d * d + 4 * slots**2 * d
        return model.num_layers * per_layer + 2 * slots * d * task.num_outputs

    per_replica = sum(examples * forward(slots) for examples, slots in bucket_widths(settings))
    return 3.0 * per_replica * settings.train.num_seeds


def matmul_rate(repeats: int = 20) -> dict[str, Any]:
    """The rate of one dense matmul on the default device, in FLOP/s: the yardstick for a
    step's achieved rate. fp32 1024^3 on CPU; bf16 8192^3 elsewhere (a GPU needs a large
    problem, and trains small models in bf16 at best)."""
    on_cpu = jax.default_backend() == "cpu"
    size, dtype = (1024, jnp.float32) if on_cpu else (8192, jnp.bfloat16)
    a, b = jax.random.normal(jax.random.key(0), (2, size, size), dtype)
    matmul = jax.jit(jnp.matmul)
    seconds = _median_time(lambda: matmul(a, b).block_until_ready(), repeats)
    return {"size": size, "dtype": jnp.dtype(dtype).name, "flops_per_s": 2 * size**3 / seconds}


def measure_step_case(case: Case, options: Options, yardstick: float) -> dict[str, Any]:
    """A step case's figures (see the module docstring)."""
    settings = compose_settings([*case.overrides, *options.extra])
    graphdef, state, optimizer = init_state(settings)
    state = place_state(state, device_mesh(settings))
    steps = settings.train.steps_per_dispatch

    start = time.perf_counter()
    chunk = make_train_chunk(settings, graphdef, optimizer, steps).lower(state).compile()
    compile_s = time.perf_counter() - start
    # XLA's cost analysis counts a loop's body once, whatever its trip count: one step.
    xla_flops = _cost_analysis(chunk).get("flops")

    def window():
        nonlocal state
        for _ in range(options.dispatches):
            state, _ = chunk(state)
        jax.block_until_ready(state)

    step_s = _median_time(window, options.repeats) / (options.dispatches * steps)
    profile = profile_ops(chunk, window, options.repeats) if options.profile else []
    slots = sum(examples * width for examples, width in bucket_widths(settings))
    tokens_per_step = slots * settings.train.num_seeds
    flops = train_step_flops(settings)

    forward_per_token, eval_per_token = per_token_costs(settings, graphdef, state, options.repeats)
    evaluations = evaluate_seeds(settings, graphdef, state.params)
    evaluation = evaluations[0]  # wall time and compilations are those of all replicas
    eval_tokens = (
        sum(length_work(settings).values())
        * settings.eval.examples_per_length
        * settings.train.num_seeds
    )
    return {
        "name": case.name,
        "overrides": [*case.overrides, *options.extra],
        "compile_s": compile_s,
        "step_s": step_s,
        "steps_per_s": 1.0 / step_s,
        "tokens_per_s": tokens_per_step / step_s,
        "flops_per_step": flops,
        "xla_flops_per_step": xla_flops,
        "flops_per_s": flops / step_s,
        "matmul_fraction": flops / step_s / yardstick,
        "eval_s": evaluation["wall_s"],
        "eval_compilations": evaluation["num_compilations"],
        "eval_tokens_per_s": eval_tokens / evaluation["wall_s"],
        "forward_s_per_token": forward_per_token,
        "eval_s_per_token": eval_per_token,
        "eval_over_forward": eval_per_token / forward_per_token,
        "profile": [op._asdict() for op in profile[:PROFILE_TOP]],
    }


def per_token_costs(
    settings: Settings, graphdef: nnx.GraphDef, state: TrainState, repeats: int
) -> tuple[float, float]:
    """Seconds per token (every slot of every replica) of (a) the forward pass of a training
    batch, counts included and no gradient, and (b) evaluation at the longest training length,
    whose bucket has the same padded width: the comparison behind "evaluation as fast as
    training". Both draw their examples inside the timed program; compilation is excluded."""
    num_seeds = settings.train.num_seeds

    def forward(params, data_key):
        # One unbucketed batch: train.batch_size examples at task.train_max_len's width.
        task = settings.task
        batch = bucket_batch(
            settings,
            data_key,
            LengthBucket(task.train_min_len, task.train_max_len, settings.train.batch_size),
        )
        return metrics.total(batch_counts(graphdef, params, batch))

    forward = jax.jit(seeds.over_seeds(forward, num_seeds))
    forward_s = _median_time(
        lambda: jax.block_until_ready(forward(state.params, state.data_key)), repeats
    )
    length = settings.task.train_max_len
    eval_length = make_eval_fn(settings, graphdef)
    eval_s = _median_time(
        lambda: jax.block_until_ready(
            eval_length(state.params, np.int32(length), padded_len=length)
        ),
        repeats,
    )
    slots = settings.task.sequence_len(length) * num_seeds
    return (
        forward_s / (settings.train.batch_size * slots),
        eval_s / (settings.eval.examples_per_length * slots),
    )


def measure_end_to_end(case: Case, options: Options) -> dict[str, Any]:
    """A whole run, as posenc-train runs it (outputs written to a temporary folder): its wall
    time, and the training and evaluation parts that results.json records."""
    settings = compose_settings([*case.overrides, *options.extra])
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        results = run(settings, folder, show_progress=False, command="posenc-bench")
        wall_s = time.perf_counter() - start
    evaluation = results["eval"]
    return {
        "name": case.name,
        "overrides": [*case.overrides, *options.extra],
        "wall_s": wall_s,
        "train_s": results["train"]["wall_s"],
        "first_dispatch_s": results["train"]["first_dispatch_s"],
        "steps_per_s": results["train"]["steps_per_s"],
        "eval_s": evaluation["wall_s"],
        "eval_compilations": evaluation["num_compilations"],
        "acc_id": results["eval"]["acc_id"],
        "acc_ood": results["eval"]["acc_ood"],
    }


def benchmark(
    cases: Sequence[Case],
    options: Options,
    on_case: Callable[[dict[str, Any]], object] = lambda _: None,
) -> dict[str, Any]:
    """Measure `cases` in order; `on_case` gets each case's figures as they are ready.
    Returns the JSON document: the machine, the matmul yardstick and every case."""
    yardstick = matmul_rate()
    measured = []
    for case in cases:
        if case.end_to_end:
            figures = measure_end_to_end(case, options)
        else:
            figures = measure_step_case(case, options, yardstick["flops_per_s"])
        measured.append(figures)
        on_case(figures)
        jax.clear_caches()  # each case compiles its own programs; keep memory flat
    origin = provenance()
    return {
        "machine": {**origin["device"], "cpu_count": _cpu_count()},
        "versions": {key: origin[key] for key in ("jax", "jaxlib", "flax", "optax", "python")},
        "commit": origin["commit"],
        "dirty": origin["dirty"],
        "repeats": options.repeats,
        "matmul": yardstick,
        "cases": measured,
    }


def sanity_problems(document: dict[str, Any]) -> list[str]:
    """What is not sane in a benchmark document: a timing or rate that is not a positive finite
    number, or XLA's FLOP count more than 2× away from the analytic one (which would mean the
    analytic formula, or what XLA's count covers, has changed). Empty when all is well; speed
    itself is never judged."""
    problems = []

    def positive(where: str, value: Any) -> None:
        if not isinstance(value, int | float) or not 0 < value < float("inf"):
            problems.append(f"{where} = {value!r} is not a positive finite number")

    positive("matmul.flops_per_s", document["matmul"]["flops_per_s"])
    for case in document["cases"]:
        timed = ("wall_s", "train_s", "steps_per_s", "eval_s")
        if "step_s" in case:
            timed = ("compile_s", "step_s", "tokens_per_s", "flops_per_s", "eval_s")
            timed += ("forward_s_per_token", "eval_s_per_token")
            ratio = (case["xla_flops_per_step"] or case["flops_per_step"]) / case["flops_per_step"]
            if not 0.5 <= ratio <= 2.0:
                problems.append(
                    f"{case['name']}: XLA counts {case['xla_flops_per_step']:.3g} FLOPs per "
                    f"step, {ratio:.2f}x the analytic {case['flops_per_step']:.3g}"
                )
        for key in timed:
            positive(f"{case['name']}.{key}", case[key])
        if case["eval_compilations"] < 1:
            problems.append(f"{case['name']}: evaluation compiled nothing")
    return problems


def format_case(figures: dict[str, Any]) -> str:
    """One line of the printed table."""
    name = f"{figures['name']:<18}"
    if "step_s" not in figures:
        return (
            f"{name} whole run {figures['wall_s']:.1f} s: training {figures['train_s']:.1f} s "
            f"(first dispatch {figures['first_dispatch_s']:.1f} s, {figures['steps_per_s']:.2f} "
            f"steps/s), evaluation {figures['eval_s']:.1f} s ({figures['eval_compilations']} "
            f"programs); acc_id {figures['acc_id']:.3f}, acc_ood {figures['acc_ood']:.3f}"
        )
    return (
        f"{name} {figures['compile_s']:9.1f} {1e3 * figures['step_s']:9.1f} "
        f"{figures['tokens_per_s'] / 1e3:9.1f} {figures['flops_per_step'] / 1e9:8.2f} "
        f"{_giga(figures['xla_flops_per_step']):>8} {figures['flops_per_s'] / 1e9:8.1f} "
        f"{100 * figures['matmul_fraction']:6.0f}% {figures['eval_s']:8.1f} "
        f"{figures['eval_compilations']:5d} {figures['eval_tokens_per_s'] / 1e3:9.1f} "
        f"{figures['eval_over_forward']:8.2f}"
    )


TABLE_HEADER = (
    f"{'case':<18} {'compile s':>9} {'step ms':>9} {'ktok/s':>9} {'GFLOP':>8} {'XLA':>8} "
    f"{'GFLOP/s':>8} {'matmul':>7} {'eval s':>8} {'progs':>5} {'eval ktok/s':>9} {'eval/fwd':>8}"
)


def main(argv: list[str] | None = None) -> None:
    """`posenc-bench`."""
    names = [case.name for case in CASES]
    parser = argparse.ArgumentParser(
        prog="posenc-bench",
        description="Measure compile time, step speed, FLOP rate and evaluation time of the "
        "benchmark cases on this machine; print a table and write one JSON document.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"only {', '.join(QUICK_CASES)}, "
        "with short chunks and a small evaluation: a smoke run",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="CASE",
        choices=names,
        help=f"run these cases only; choose from {', '.join(names)}",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Hydra overrides added to every case, e.g. --set train.length_buckets=4",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=Options.repeats,
        help="timed windows per case, of which the median is reported",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("posenc-bench.json"),
        help="where to write the JSON document (default: %(default)s)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile each step case per XLA operation and print where its time goes",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless every figure is sane (never judges speed)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats} must be at least 1.")
    # Checked before measuring: a long benchmark must not end unable to write its result.
    folder = args.json.absolute().parent
    if args.json.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        parser.error(f"--json={args.json} cannot be written: choose a file in an existing folder.")
    chosen = args.only or (QUICK_CASES if args.quick else names)
    cases = [case for case in CASES if case.name in chosen]
    options = Options(
        repeats=args.repeats,
        dispatches=1 if args.quick else Options.dispatches,
        extra=(*(QUICK_OVERRIDES if args.quick else ()), *args.set),
        profile=args.profile,
    )
    for case in cases:  # every override checked before anything is measured
        try:
            settings = compose_settings([*case.overrides, *options.extra])
            device_mesh(settings)  # the visible devices can split it
        except (ConfigError, HydraException) as error:
            parser.error(f"case {case.name}: {error}")
        if settings.train.distributed:
            parser.error(
                f"case {case.name}: posenc-bench measures one process; train.distributed=true "
                f"(several processes, one run) is not benchmarked. Measure with train.sharding "
                f"over this process's devices instead."
            )
    print(
        f"posenc-bench on {jax.devices()[0].device_kind} ({jax.default_backend()}), jax "
        f"{jax.__version__}; medians of {options.repeats} windows"
    )
    print(TABLE_HEADER)
    document = benchmark(cases, options, on_case=print_case)
    matmul = document["matmul"]
    print(
        f"matmul yardstick: {matmul['dtype']} {matmul['size']}^3 at "
        f"{matmul['flops_per_s'] / 1e9:.1f} GFLOP/s"
    )
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.json}")
    if args.check:
        problems = sanity_problems(document)
        for problem in problems:
            print(f"posenc-bench --check: {problem}", file=sys.stderr)
        if problems:
            sys.exit(1)


def print_case(figures: dict[str, Any]) -> None:
    """A case's line of the table, and its profile when there is one."""
    print(format_case(figures))
    if figures.get("profile"):
        print(format_profile([OpTime(**op) for op in figures["profile"]], top=12))


def _giga(value: float | None) -> str:
    return "—" if value is None else f"{value / 1e9:.2f}"


def _median_time(work: Callable[[], object], repeats: int) -> float:
    """The median wall time of `work()` over `repeats` calls, after one untimed call."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cost_analysis(compiled: Any) -> dict[str, float]:
    """XLA's cost analysis of a compiled program (a list of one dict in older jax)."""
    analysis = compiled.cost_analysis()
    return analysis[0] if isinstance(analysis, list) else analysis


def _cpu_count() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
