"""Per-length evaluation: accuracy at every input length from eval.min_len to eval.max_len.

For each length n, `eval.examples_per_length` examples are drawn from a key that depends only on
(eval.seed, n), so every run of a sweep is scored on the same examples; with randomized
positions (`encoding.randomized`), their positions come from that key too (`positions.py`).
Lengths are padded into buckets (train_max_len, 2×, 4×, ... up to max_len) and the padding is
masked, so evaluation compiles one program per bucket — logarithmic in max_len — instead of
one per length. Inside a program the examples run in chunks (`lax.map`) small enough that one
layer's attention weights stay within `ATTENTION_ELEMENTS_PER_CHUNK`, so evaluating at 16× the
training length fits in a laptop's memory; the examples themselves do not depend on the chunks.

Reported per length: per-token accuracy over the answer slots, and whole-sequence exact match
(for classification the two coincide). Summaries:
- acc_id:  mean token accuracy over lengths <= train_max_len (in distribution);
- acc_ood: mean over lengths > train_max_len, the first unseen length included.

A length whose positions the encoding cannot represent (e.g. past a learned table) is not run:
its accuracies are None, it is listed in `not_representable`, and a mean over a range that
contains one is None too (with `acc_ood_representable` giving the mean over the rest).
Decoder models are scored with teacher forcing: each answer slot sees the true earlier answers.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from posenc_jax import metrics
from posenc_jax.compilation import CompilationCounter
from posenc_jax.config import Settings
from posenc_jax.positions import position_scheme
from posenc_jax.tasks import Batch

# One chunk's attention weights [chunk, heads, T, T] hold at most this many float32 values
# (128 MiB); the default model's usual evaluation (T <= 128) then runs as a single chunk.
ATTENTION_ELEMENTS_PER_CHUNK = 2**25


def length_buckets(train_max_len: int, max_len: int) -> list[int]:
    """Padded input lengths used by evaluation: [train_max_len, 2×, 4×, ..., max_len]."""
    buckets = [min(train_max_len, max_len)]
    while buckets[-1] < max_len:
        buckets.append(min(2 * buckets[-1], max_len))
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
    return position_scheme(settings.encoding, length_key, batch)


def chunk_size(examples: int, num_heads: int, sequence_len: int) -> int:
    """Examples per forward pass, so that [chunk, heads, T, T] <= ATTENTION_ELEMENTS_PER_CHUNK,
    spread evenly over the fewest chunks (so the padded last chunk wastes little)."""
    largest = max(1, ATTENTION_ELEMENTS_PER_CHUNK // (num_heads * sequence_len**2))
    num_chunks = -(-examples // largest)
    return -(-examples // num_chunks)


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
    """jit(params, length, padded_len) -> summed `metrics.Counts` for one length.

    `length` is traced, `padded_len` is static: one compiled program per bucket."""

    @functools.partial(jax.jit, static_argnames="padded_len")
    def eval_length(params, length: jax.Array, padded_len: int) -> metrics.Counts:
        batch = eval_batch(settings, length, padded_len)

        def count(chunk: Batch) -> metrics.Counts:
            model = nnx.merge(graphdef, params)
            return metrics.count(model(chunk.inputs, chunk.positions, chunk.token_mask), chunk)

        chunk = chunk_size(batch.inputs.shape[0], settings.model.num_heads, batch.inputs.shape[1])
        return metrics.total(map_in_chunks(count, batch, chunk))

    return eval_length


def attention_maps(
    settings: Settings, graphdef: nnx.GraphDef, params: Any, length: int
) -> list[np.ndarray]:
    """Attention weights of the first evaluation example of input length `length`, per layer:
    [heads, T, T] with T its real (unpadded) number of slots; rows are queries.

    `length` must be one that `evaluate` runs; the example is the one it scores there, in the
    same bucket, so it has the same positions."""
    padded_len = bucket_of(
        length, length_buckets(settings.task.train_max_len, settings.eval_max_len)
    )

    @jax.jit
    def first_example_weights(params):
        batch = jax.tree.map(lambda a: a[:1], eval_batch(settings, jnp.int32(length), padded_len))
        return nnx.merge(graphdef, params).attention_weights(
            batch.inputs, batch.positions, batch.token_mask
        )

    real = settings.task.sequence_len(length)
    return [np.asarray(weights)[0, :, :real, :real] for weights in first_example_weights(params)]


def evaluate(settings: Settings, graphdef: nnx.GraphDef, params: Any) -> dict[str, Any]:
    """Evaluate at every length; returns the `eval` section of results.json."""
    task = settings.task
    lengths = list(range(settings.eval_min_len, settings.eval_max_len + 1))
    representable = [n for n in lengths if settings.encoding.represents(task.sequence_len(n))]
    buckets = length_buckets(task.train_max_len, settings.eval_max_len)
    eval_length = make_eval_fn(settings, graphdef)

    start = time.perf_counter()
    with CompilationCounter() as compiled:
        pending = {
            n: eval_length(
                params, np.int32(n), padded_len=bucket_of(n, buckets)
            )  # numpy: no device op
            for n in representable
        }
        counts = jax.device_get(pending)  # the only host sync of the evaluation
    eval_s = time.perf_counter() - start

    token_acc = [
        float(counts[n].correct / counts[n].scored) if n in counts else None for n in lengths
    ]
    seq_acc = [
        float(counts[n].exact / settings.eval.examples_per_length) if n in counts else None
        for n in lengths
    ]
    in_dist = [i for i, n in enumerate(lengths) if n <= task.train_max_len]
    out_dist = [i for i, n in enumerate(lengths) if n > task.train_max_len]
    return {
        "lengths": lengths,
        "token_acc": token_acc,
        "seq_acc": seq_acc,
        "train_max_len": task.train_max_len,
        "min_len": settings.eval_min_len,
        "max_len": settings.eval_max_len,
        "examples_per_length": settings.eval.examples_per_length,
        "acc_id": _mean(token_acc, in_dist),
        "acc_ood": _mean(token_acc, out_dist),
        "seq_acc_id": _mean(seq_acc, in_dist),
        "seq_acc_ood": _mean(seq_acc, out_dist),
        "acc_ood_representable": _mean(
            token_acc, [i for i in out_dist if token_acc[i] is not None]
        ),
        "not_representable": [n for n in lengths if n not in counts],
        "task_kind": task.kind,
        "scoring": "teacher_forced" if settings.model.causal else "encoder",
        "buckets": buckets,
        "num_compilations": compiled.count,
        "wall_s": eval_s,
    }


def _mean(values: list[float | None], indices: list[int]) -> float | None:
    """Mean over `indices`; None if there are none or any value there is None."""
    chosen = [values[i] for i in indices]
    known = [v for v in chosen if v is not None]
    if not chosen or len(known) < len(chosen):
        return None
    return float(np.mean(known))
