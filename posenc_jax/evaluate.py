"""Per-length evaluation: accuracy at every input length from eval.min_len to eval.max_len.

For each length n, `eval.examples_per_length` examples are drawn from a key that depends only on
(eval.seed, n), so every run of a sweep is scored on the same examples; with randomized
positions (`encoding.randomized`), their positions come from that key too (`positions.py`).
Lengths are padded into buckets (train_max_len, 2×, 4×, ... up to max_len) and the padding is
masked, so evaluation compiles one program per bucket — logarithmic in eval.max_len — instead of
one per length. Inside a program the examples run in chunks (`lax.map`) small enough that one
layer's attention weights stay within a budget (`attention_elements_per_chunk`): on a CPU one
that keeps a chunk in cache, elsewhere one that bounds memory, so evaluating at 16× the
training length fits in a laptop's memory; the examples themselves do not depend on the chunks.

Reported per length: per-token accuracy over the answer slots, and whole-sequence exact match
(for classification the two coincide). Summaries:
- acc_id:  mean token accuracy over lengths <= train_max_len (in distribution);
- acc_ood: mean over lengths > train_max_len, the first unseen length included.

A length whose positions the encoding cannot represent (e.g. past a learned table) is not run:
its accuracies are None, it is listed in `not_representable`, and a mean over a range that
contains one is None too (with `acc_ood_representable` giving the mean over the rest).
Decoders are scored on the answers they generate greedily (`eval.decoding=greedy`, the default),
or with teacher forcing (`teacher_forced`); see `decoding.py`. results.json's `scoring` says which.

With train.num_seeds > 1 the parameters carry a leading seed axis and every program is vmapped
over it (`evaluate_seeds`): all replicas are scored on the same examples in one dispatch.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from posenc_jax import metrics, seeds
from posenc_jax.compilation import CompilationCounter
from posenc_jax.config import Settings
from posenc_jax.decoding import decode
from posenc_jax.distributed import to_host
from posenc_jax.positions import position_scheme
from posenc_jax.sharding import data_devices, device_mesh, split_examples
from posenc_jax.tasks import Batch

# One chunk's attention weights [chunk, heads, T, T] hold at most this many float32 values
# (128 MiB) on an accelerator: a bound on memory; the default model's usual evaluation
# (T <= 128) then runs as a single chunk.
ATTENTION_ELEMENTS_PER_CHUNK = 2**25
# On a CPU, 4 MiB, so that a chunk's activations stay in cache. The paper config's evaluation
# per bucket (256 examples of 80, 160 and 200 slots, 2-core CPU): 0.61, 2.20 and 3.87 s with
# the 2^25 budget; 0.24, 0.78 and 1.25 s with 2^20; 0.25, 0.78 and 1.13 s with 2^18.
CPU_ATTENTION_ELEMENTS_PER_CHUNK = 2**20


def attention_elements_per_chunk() -> int:
    """The chunk budget of the default backend (see the constants above)."""
    if jax.default_backend() == "cpu":
        return CPU_ATTENTION_ELEMENTS_PER_CHUNK
    return ATTENTION_ELEMENTS_PER_CHUNK


def length_buckets(train_max_len: int, eval_max_len: int) -> list[int]:
    """Padded input lengths used by evaluation: [train_max_len, 2×, 4×, ..., eval_max_len]."""
    buckets = [min(train_max_len, eval_max_len)]
    while buckets[-1] < eval_max_len:
        buckets.append(min(2 * buckets[-1], eval_max_len))
    return buckets


def bucket_of(length: int, buckets: list[int]) -> int:
    """The padded input length that `length` is evaluated in."""
    return next(b for b in buckets if b >= length)


def eval_batch(settings: Settings, length: jax.Array, padded_len: int) -> Batch:
    """The `eval.examples_per_length` examples of input length `length`, padded to `padded_len`.

    A pure function of (eval.seed, length): the same examples in every run and every bucket."""
    length_key = jax.random.fold_in(jax.random.key(settings.eval.seed), length)
    lengths = jnp.full((settings.eval.examples_per_length,), length, jnp.int32)
    batch = settings.task.sample(length_key, lengths, padded_len, settings.model.causal)
    return position_scheme(settings, length_key, batch, training=False)


def chunk_size(
    examples: int,
    num_heads: int,
    sequence_len: int,
    num_seeds: int = 1,
    budget: int | None = None,
    multiple_of: int = 1,
) -> int:
    """Examples per forward pass, so that the replicas' [seeds, chunk, heads, T, T] <= `budget`
    elements (default: `attention_elements_per_chunk()`), spread evenly over the fewest chunks
    (so the padded last chunk wastes little), then rounded up to a multiple of `multiple_of`
    (the devices a `data` mesh splits every chunk over, which may overstep the budget by less
    than one example per device)."""
    budget = attention_elements_per_chunk() if budget is None else budget
    largest = max(1, budget // (num_seeds * num_heads * sequence_len**2))
    num_chunks = -(-examples // largest)
    even = -(-examples // num_chunks)
    return -(-even // multiple_of) * multiple_of


def map_in_chunks(fn, batch: Batch, chunk: int):
    """fn over `batch` in chunks of `chunk` examples, one after another (`lax.map`); fn returns
    per-example arrays [chunk, ...], and the result is [batch, ...], as if fn saw the whole batch.
    The last chunk is padded with empty rows, which are cut off again."""
    size = batch.inputs.shape[0]
    num_chunks = -(-size // chunk)
    extra = num_chunks * chunk - size

    def split(a):
        return jnp.pad(a, [(0, extra)] + [(0, 0)] * (a.ndim - 1)).reshape(
            num_chunks, chunk, *a.shape[1:]
        )

    per_chunk = jax.lax.map(fn, jax.tree.map(split, batch))
    return jax.tree.map(lambda a: a.reshape(num_chunks * chunk, *a.shape[2:])[:size], per_chunk)


def make_eval_fn(settings: Settings, graphdef: nnx.GraphDef):
    """jit(params, length, padded_len) -> summed `metrics.Counts` for one length ([num_seeds]
    per field with several seeds: the replicas are vmapped, their examples shared).

    `length` is traced, `padded_len` is static: one compiled program per bucket."""
    num_seeds = settings.train.num_seeds
    mesh = device_mesh(settings, training=False)

    def length_counts(params, length: jax.Array, padded_len: int) -> metrics.Counts:
        batch = eval_batch(settings, length, padded_len)

        def count(chunk: Batch) -> metrics.Counts:
            chunk = split_examples(chunk, mesh)
            logits, _ = decode(nnx.merge(graphdef, params), chunk, settings.scoring)
            return metrics.count(logits, chunk)

        chunk = chunk_size(
            batch.inputs.shape[0],
            settings.model.num_heads,
            batch.inputs.shape[1],
            num_seeds,
            multiple_of=data_devices(mesh),
        )
        return metrics.total(map_in_chunks(count, batch, chunk))

    @functools.partial(jax.jit, static_argnames="padded_len")
    def eval_length(params, length: jax.Array, padded_len: int) -> metrics.Counts:
        # Under vmap the examples depend on the length only, so they are drawn once for all.
        def one_replica(params, length):
            return length_counts(params, length, padded_len)

        return seeds.over_seeds(one_replica, num_seeds, in_axes=(0, None))(params, length)

    return eval_length


def attention_maps(
    settings: Settings, graphdef: nnx.GraphDef, params: Any, length: int
) -> list[np.ndarray]:
    """Attention weights of the first evaluation example of input length `length`, per layer:
    [heads, T, T] with T its real (unpadded) number of slots; rows are queries.

    `length` must be one that `evaluate` runs; the example is the one it scores there, in the
    same bucket, so it has the same positions, and a greedy decoder's maps are of the answers
    it generated."""
    padded_len = bucket_of(
        length, length_buckets(settings.task.train_max_len, settings.eval_max_len)
    )

    @jax.jit
    def first_example_weights(params):
        batch = jax.tree.map(lambda a: a[:1], eval_batch(settings, jnp.int32(length), padded_len))
        model = nnx.merge(graphdef, params)
        _, inputs = decode(model, batch, settings.scoring)
        return model.attention_weights(inputs, batch.positions, batch.token_mask)

    real = settings.task.sequence_len(length)
    return [np.asarray(weights)[0, :, :real, :real] for weights in first_example_weights(params)]


def representable_lengths(settings: Settings) -> list[int]:
    """The evaluation lengths whose positions the encoding can represent: the ones that run."""
    lengths = range(settings.eval_min_len, settings.eval_max_len + 1)
    return [n for n in lengths if settings.represents_length(n)]


def length_work(settings: Settings) -> dict[int, int]:
    """Each length that runs, and the padded slots its examples run at: the measure of its
    share of the evaluation's work (a length in the 4x bucket costs far more than one in the
    first)."""
    buckets = length_buckets(settings.task.train_max_len, settings.eval_max_len)
    return {
        n: settings.task.sequence_len(bucket_of(n, buckets))
        for n in representable_lengths(settings)
    }


def evaluate(
    settings: Settings,
    graphdef: nnx.GraphDef,
    params: Any,
    on_progress: Callable[[int], object] | None = None,
) -> dict[str, Any]:
    """Evaluate a one-seed run at every length; returns the `eval` section of results.json,
    with one list per `metrics.PER_LENGTH` metric and its in-/out-of-distribution means."""
    if settings.train.num_seeds != 1:
        raise ValueError("evaluate() takes one seed's parameters; use evaluate_seeds()")
    (evaluation,) = evaluate_seeds(settings, graphdef, params, on_progress)
    return evaluation


def evaluate_seeds(
    settings: Settings,
    graphdef: nnx.GraphDef,
    params: Any,
    on_progress: Callable[[int], object] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every replica at every length: one `evaluate`-style dict per seed, in the order
    of `seeds.seeds_of`, from one vmapped program per bucket; `params` is stacked on a leading
    seed axis when train.num_seeds > 1.

    `on_progress(length)` is called on the host as each length is finished. Lengths are
    dispatched a bucket at a time (one compilation each) and read back in order, so reading
    waits only for work already queued: no extra synchronisation."""
    task = settings.task
    num_seeds = settings.train.num_seeds
    representable = representable_lengths(settings)
    buckets = length_buckets(task.train_max_len, settings.eval_max_len)
    eval_length = make_eval_fn(settings, graphdef)

    counts: dict[int, list[metrics.Counts]] = {}
    start = time.perf_counter()
    with CompilationCounter() as compiled:
        for bucket in buckets:
            in_bucket = [n for n in representable if bucket_of(n, buckets) == bucket]
            # np.int32: the length is a traced argument that needs no device op to create.
            pending = {n: eval_length(params, np.int32(n), padded_len=bucket) for n in in_bucket}
            for n, result in pending.items():
                counts[n] = seeds.split_host(result, num_seeds)
                if on_progress is not None:
                    on_progress(n)
    common = {
        "train_max_len": task.train_max_len,
        "min_len": settings.eval_min_len,
        "max_len": settings.eval_max_len,
        "examples_per_length": settings.eval.examples_per_length,
        "task_kind": task.kind,
        "scoring": settings.scoring,
        "buckets": buckets,
        "num_compilations": compiled.count,
        "wall_s": time.perf_counter() - start,  # of all replicas together
    }
    return [
        _length_summary(settings, {n: per_seed[i] for n, per_seed in counts.items()}, common)
        for i in range(num_seeds)
    ]


def _length_summary(
    settings: Settings, counts: dict[int, metrics.Counts], common: dict[str, Any]
) -> dict[str, Any]:
    """One replica's evaluation from its summed counts per length run."""
    train_max_len = settings.task.train_max_len
    lengths = list(range(settings.eval_min_len, settings.eval_max_len + 1))
    in_dist = [i for i, n in enumerate(lengths) if n <= train_max_len]
    out_dist = [i for i, n in enumerate(lengths) if n > train_max_len]
    evaluation: dict[str, Any] = {"lengths": lengths}
    summaries: dict[str, float | None] = {}
    for metric in metrics.PER_LENGTH:
        values = [metric.value(counts[n]) if n in counts else None for n in lengths]
        evaluation[metric.name] = values
        id_key, ood_key = metric.summaries
        summaries[id_key] = _mean(values, in_dist)
        summaries[ood_key] = _mean(values, out_dist)
        # Where some long lengths are not representable, the mean over the ones that are.
        summaries[metric.ood_representable] = _mean(
            values, [i for i in out_dist if values[i] is not None]
        )
    return {
        **evaluation,
        **summaries,
        "not_representable": [n for n in lengths if n not in counts],
        **common,
    }


def evaluate_with_attention(
    settings: Settings,
    graphdef: nnx.GraphDef,
    params: Any,
    on_progress: Callable[[int], object] | None = None,
) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """`evaluate_seeds`, and the attention maps of the first replica at `eval.attention_len`
    (default: the longest length evaluated), recorded as `attention_len` in each seed's
    results; no maps if no length was run."""
    evaluations = evaluate_seeds(settings, graphdef, params, on_progress)
    evaluated = representable_lengths(settings)
    # Validation guarantees that a chosen attention_len is evaluated.
    length = settings.eval.attention_len or (evaluated[-1] if evaluated else None)
    for evaluation in evaluations:
        evaluation["attention_len"] = length
    if length is None:
        return evaluations, []
    # On this host, whichever processes' devices hold the replica: the maps are drawn locally.
    first = seeds.pick(to_host(params), 0, settings.train.num_seeds)
    return evaluations, attention_maps(seeds.replica(settings, 0), graphdef, first, length)


def _mean(values: list[float | None], indices: list[int]) -> float | None:
    """Mean over `indices`; None if there are none or any value there is None."""
    chosen = [values[i] for i in indices]
    known = [v for v in chosen if v is not None]
    if not chosen or len(known) < len(chosen):
        return None
    return float(np.mean(known))
