"""Training: one pytree of state, one jitted chunk of steps, and a loop with side effects only at
its edges.

The model is built with Flax NNX and split once into (graphdef, params); the jitted step merges
them, takes the gradient, applies optax AdamW, and lets the encoding project its parameters back
into their valid set (KERPLE keeps its parameters positive). A chunk of `steps_per_dispatch` steps
runs as one `lax.scan`, so Python dispatches once per chunk. Each step's data key is
`fold_in(data_key, step)`: a run is a pure function of (settings, seed), and a restart from any step
replays the same batches (with randomized positions, those are drawn from the same key, see
`positions.py`). The loop reads metrics back from the device only at log steps.

With `train.num_seeds=N` the state carries a leading seed axis: N replicas, replica i the run
with seed + i, take their steps side by side in one vmapped program (`seeds.py`). A replica whose
loss stops being finite is marked diverged and left to run on (it cannot touch the others);
training stops early only when every replica has diverged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from posenc_jax import metrics, seeds
from posenc_jax.config import OptimConfig, Settings
from posenc_jax.length_buckets import LengthBucket, run_buckets
from posenc_jax.model import build_model
from posenc_jax.positions import position_scheme
from posenc_jax.sharding import device_mesh, place_state, split_examples
from posenc_jax.tasks.base import Batch


class TrainState(NamedTuple):
    params: Any  # nnx.State of the model's parameters
    opt_state: Any
    step: jax.Array  # int32 scalar: steps taken so far
    data_key: jax.Array  # base key of the data stream
    # int32 scalar: the first step whose loss or gradient was not finite (1-based, as steps are
    # counted in the logs); 0 while every step has been finite. Kept on the device, so finding
    # it costs no host read until a log step.
    first_nonfinite_step: jax.Array


def learning_rate_schedule(optim: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to the peak, then cosine decay to final_lr_ratio × peak."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=optim.learning_rate,
        warmup_steps=optim.warmup(total_steps),
        decay_steps=total_steps,
        end_value=optim.learning_rate * optim.final_lr_ratio,
    )


def build_optimizer(optim: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    # Decay matrices only (ndim >= 2), the usual choice (nanoGPT, BERT): not biases or norm scales.
    def decay_mask(params):
        return jax.tree.map(lambda p: p.ndim >= 2, params)

    return optax.chain(
        optax.clip_by_global_norm(optim.grad_clip),
        optax.adamw(
            learning_rate_schedule(optim, total_steps),
            b1=optim.b1,
            b2=optim.b2,
            weight_decay=optim.weight_decay,
            mask=decay_mask,
        ),
    )


def init_state(settings: Settings) -> tuple[nnx.GraphDef, TrainState, optax.GradientTransformation]:
    """The model's structure, the initial state and the optimizer. With train.num_seeds=N the
    state is N replicas' states stacked on a leading axis, replica i initialised exactly as the
    run with seed + i."""
    optimizer = build_optimizer(settings.optim, settings.train.steps)
    states = []
    for index in range(settings.train.num_seeds):
        init_key, data_key = jax.random.split(jax.random.key(settings.seed + index))
        graphdef, params = nnx.split(build_model(settings, init_key), nnx.Param)
        states.append(
            TrainState(
                params,
                optimizer.init(params),
                jnp.zeros((), jnp.int32),
                data_key,
                jnp.zeros((), jnp.int32),
            )
        )
    return graphdef, seeds.stack(states), optimizer


def abstract_init_state(
    settings: Settings,
) -> tuple[nnx.GraphDef, TrainState, optax.GradientTransformation]:
    """`init_state` with every array a jax.ShapeDtypeStruct: the state's shapes and dtypes (weak
    types included), traced without computing or compiling anything."""
    static = {}

    def state_only() -> TrainState:
        static["graphdef"], state, static["optimizer"] = init_state(settings)
        return state

    state = jax.eval_shape(state_only)
    return static["graphdef"], state, static["optimizer"]


def training_batches(settings: Settings, data_key: jax.Array, step: jax.Array) -> list[Batch]:
    """The examples of training step `step`, one batch per length bucket (`length_buckets.py`),
    each padded to its bucket's longest length: a pure function of (data_key, step). Without
    buckets, one batch of train.batch_size examples padded to task.train_max_len."""
    step_key = jax.random.fold_in(data_key, step)
    buckets = run_buckets(settings)
    if len(buckets) == 1:
        return [bucket_batch(settings, step_key, buckets[0])]
    return [
        bucket_batch(settings, jax.random.fold_in(step_key, index), bucket)
        for index, bucket in enumerate(buckets)
    ]


def bucket_batch(settings: Settings, key: jax.Array, bucket: LengthBucket) -> Batch:
    """bucket.examples examples drawn from `key`, with lengths uniform on the bucket's range,
    padded to bucket.max_len."""
    task = settings.task
    length_key, sample_key = jax.random.split(key)
    lengths = task.sample_lengths(length_key, bucket.examples, bucket.min_len, bucket.max_len)
    batch = task.sample(sample_key, lengths, bucket.max_len, settings.model.causal)
    return position_scheme(settings, key, batch, training=True)


def microbatches(batch: Batch, size: int | None) -> list[Batch]:
    """`batch` cut into consecutive slices of at most `size` examples (the whole batch if
    `size` is None or not smaller): the passes of `train.microbatch`.

    The slices are static, so XLA compiles each as a pass of its own, whose activations stay in
    a CPU's cache: the paper-config step (128 examples of 80 slots) takes 288-303 ms in slices
    of 32 and 296 ms in slices of 16, against 384 ms in one pass (2-core CPU). Mapping one pass
    over the slices with `lax.map` was slower (486 ms at 32): its backward pass stacks every
    slice's activations."""
    examples = batch.inputs.shape[0]
    if size is None or size >= examples:
        return [batch]
    return [
        jax.tree.map(lambda array, start=start, stop=start + size: array[start:stop], batch)
        for start in range(0, examples, size)
    ]


def batch_counts(graphdef: nnx.GraphDef, params: Any, batch: Batch) -> metrics.Counts:
    """The model's per-example `metrics.Counts` on a training batch (one forward pass)."""
    logits = nnx.merge(graphdef, params)(batch.inputs, batch.positions, batch.token_mask)
    return metrics.count(logits, batch)


def project_parameters(graphdef: nnx.GraphDef, params: Any) -> Any:
    """The parameters after the encoding's `project_parameters` (e.g. KERPLE's clamp to > 0)."""
    model = nnx.merge(graphdef, params)
    model.encoding.project_parameters()
    return nnx.state(model, nnx.Param)


def make_train_chunk(
    settings: Settings,
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    num_steps: int,
) -> Callable[[TrainState], tuple[TrainState, metrics.Counts]]:
    """A jitted function that takes `num_steps` steps and returns the summed metric counts
    (per replica, [num_seeds], with several seeds)."""

    mesh = device_mesh(settings)

    def loss_fn(params, batches):
        # The mean over every scored token of the step, whichever bucket's batch holds it.
        per_example = [
            batch_counts(graphdef, params, split_examples(part, mesh))
            for batch in batches
            for part in microbatches(batch, settings.train.microbatch)
        ]
        counts = metrics.total(jax.tree.map(lambda *parts: jnp.concatenate(parts), *per_example))
        return counts.nll / jnp.maximum(counts.scored, 1.0), counts

    def one_step(state: TrainState, step: jax.Array):
        batches = training_batches(settings, state.data_key, step)
        (_, counts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batches)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = project_parameters(graphdef, optax.apply_updates(state.params, updates))
        finite = jnp.isfinite(counts.nll.sum()) & jnp.isfinite(optax.tree.norm(grads))
        first = state.first_nonfinite_step
        first = jnp.where((first == 0) & ~finite, state.step + 1, first)
        return TrainState(params, opt_state, state.step + 1, state.data_key, first), counts

    def chunk(state: TrainState, first_step: jax.Array):
        steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)
        state, per_step = jax.lax.scan(one_step, state, steps)
        return state, metrics.total(per_step)

    num_seeds = settings.train.num_seeds
    over_replicas = seeds.over_seeds(chunk, num_seeds, in_axes=(0, None))

    def run_chunk(state: TrainState):
        # The replicas are all at the same step: one unbatched step for all of them.
        return over_replicas(state, state.step[0] if num_seeds > 1 else state.step)

    return jax.jit(run_chunk, donate_argnums=0)


class TrainOutcome(NamedTuple):
    graphdef: nnx.GraphDef
    params: Any  # stacked on a leading seed axis with several seeds
    summary: dict[str, Any]
    # Per replica: seed, status, steps (at divergence, for a diverged one), final_loss, final_acc.
    seed_summaries: list[dict[str, Any]]


class ResumePoint(NamedTuple):
    """Where an interrupted run goes on from: a checkpoint's state, replica summaries, and the
    metric counts summed since the last log step (None at a log step)."""

    step: int
    state: TrainState
    replicas: list[dict[str, Any]]  # as TrainOutcome.seed_summaries, so far
    window: metrics.Counts | None = None


class Preempted(Exception):
    """Training stopped at `step` because a stop was requested (SIGTERM); a rerun resumes
    from `resume_from`: a checkpoint saved at `step`, or an earlier one (0: none) when every
    replica had already diverged there unnoticed, a state never saved."""

    def __init__(self, step: int, resume_from: int):
        super().__init__(f"stopped at step {step}; resumes from step {resume_from}")
        self.step = step
        self.resume_from = resume_from


def train(
    settings: Settings,
    on_log: Callable[[int, list[dict[str, float]]], None],
    resume: ResumePoint | None = None,
    on_checkpoint: Callable[..., None] | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> TrainOutcome:
    """Run the training loop, from step 0 or from `resume`. `on_log(step, scalars)` is called
    at every log step (host side), with one dict of scalars per replica (one, unless
    train.num_seeds > 1). `on_checkpoint(step, state, replicas, window)` is called after the
    log of the first log step of every train.checkpoint_every steps, and after the last step: a
    run resumed from there takes the same steps as one never interrupted. `window` is the
    metric counts since the last log step (None at one).

    `stop_requested()` is asked after every dispatched chunk; when it says yes, training saves
    a checkpoint at that step (`on_checkpoint`) and raises `Preempted`.

    A replica whose loss or gradient becomes NaN or infinite is "diverged" from that step on
    (found at the next log step); training stops early when all have, and takes no checkpoint
    of a state in which every replica has diverged. summary["status"] is "completed" if every
    replica completed, else "diverged". With one seed, the summary holds that seed's steps,
    final_loss and final_acc too, and first_nonfinite_step if it diverged.
    """
    cfg = settings.train
    graphdef, state, optimizer = init_state(settings)
    replicas = [
        {"seed": seed, "status": "completed", "steps": cfg.steps}
        for seed in seeds.seeds_of(settings)
    ]
    done, window = 0, None
    if resume is not None:
        done, state, window = resume.step, resume.state, resume.window
        replicas = [dict(replica) for replica in resume.replicas]
    state = place_state(state, device_mesh(settings))
    last_checkpoint = done
    schedule = learning_rate_schedule(settings.optim, cfg.steps)
    # One compiled program per chunk size (a final short chunk adds one).
    chunks: dict[int, Callable] = {}
    start = time.perf_counter()
    first_dispatch_s = None
    steady_start, steady_step = start, done
    while done < cfg.steps:
        size = min(cfg.steps_per_dispatch, cfg.steps - done)
        if size not in chunks:
            chunks[size] = make_train_chunk(settings, graphdef, optimizer, size)
        state, counts = chunks[size](state)
        window = counts if window is None else jax.tree.map(jnp.add, window, counts)
        done += size
        if first_dispatch_s is None:
            jax.block_until_ready(state.step)  # the first chunk includes compilation
            steady_start, steady_step = time.perf_counter(), done
            first_dispatch_s = steady_start - start
        if done % cfg.log_every == 0 or done == cfg.steps:
            learning_rate = float(np.asarray(schedule(done - 1)))
            # One read for the window's counts and the first non-finite step of each replica.
            per_seed = seeds.split_host((window, state.first_nonfinite_step), cfg.num_seeds)
            logged = [_scalars(counts, learning_rate) for counts, _ in per_seed]
            window = None
            on_log(done, logged)
            for replica, scalars, (_, first_nonfinite) in zip(
                replicas, logged, per_seed, strict=True
            ):
                if replica["status"] == "completed":
                    replica.update(final_loss=scalars["train/loss"], final_acc=scalars["train/acc"])
                    if first_nonfinite:
                        replica.update(status="diverged", steps=int(first_nonfinite))
            if all(replica["status"] == "diverged" for replica in replicas):
                break
            every = cfg.checkpoint_every
            due = every is not None and done // every > last_checkpoint // every
            if on_checkpoint is not None and (due or done == cfg.steps):
                on_checkpoint(done, state, replicas, None)
                last_checkpoint = done
        if on_checkpoint is not None and done < cfg.steps and stop_requested():
            if last_checkpoint != done and not _all_diverged(state, replicas, cfg.num_seeds):
                on_checkpoint(done, state, replicas, window)
                last_checkpoint = done
            raise Preempted(done, last_checkpoint)
    jax.block_until_ready(state.params)
    end = time.perf_counter()
    steady_steps = done - steady_step
    completed = all(replica["status"] == "completed" for replica in replicas)
    summary = {
        "status": "completed" if completed else "diverged",
        "steps": done,
        "wall_s": end - start,
        "first_dispatch_s": first_dispatch_s,
        # Steps of all replicas together: each step trains num_seeds replicas.
        "steps_per_s": steady_steps / (end - steady_start) if steady_steps else None,
    }
    if cfg.num_seeds == 1:
        summary.update({key: replicas[0].get(key) for key in ("final_loss", "final_acc")})
        if not completed:  # with several seeds, each one's "steps" in results.json's seeds says it
            summary["first_nonfinite_step"] = replicas[0]["steps"]
    else:
        summary["num_seeds"] = cfg.num_seeds
    return TrainOutcome(graphdef, state.params, summary, replicas)


def _all_diverged(state: TrainState, replicas: list[dict], num_seeds: int) -> bool:
    """Whether every replica has diverged by now, found at a log step or not yet (a stop
    between log steps): such a state is never saved, so the last good checkpoint stays."""
    pending = seeds.split_host(state.first_nonfinite_step, num_seeds)
    return all(
        replica["status"] == "diverged" or bool(first)
        for replica, first in zip(replicas, pending, strict=True)
    )


def _scalars(counts: metrics.Counts, learning_rate: float) -> dict[str, float]:
    """One replica's training scalars from its counts summed over a logging window."""
    scored = max(float(counts.scored), 1.0)
    return {
        "train/loss": float(counts.nll) / scored,
        "train/acc": float(counts.correct) / scored,
        "train/lr": learning_rate,
    }
