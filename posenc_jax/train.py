"""Training: one pytree of state, one jitted chunk of steps, and a loop with side effects only at
its edges.

The model is built with Flax NNX and split once into (graphdef, params); the jitted step merges
them, takes the gradient, applies optax AdamW, and lets the encoding project its parameters back
into their valid set (KERPLE keeps its parameters positive). A chunk of `steps_per_dispatch` steps
runs as one `lax.scan`, so Python dispatches once per chunk. Each step's data key is
`fold_in(data_key, step)`: a run is a pure function of (settings, seed), and a restart from any step
replays the same batches (with randomized positions, those are drawn from the same key, see
`positions.py`). The loop reads metrics back from the device only at log steps.
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

from posenc_jax import metrics
from posenc_jax.config import OptimConfig, Settings
from posenc_jax.model import build_model
from posenc_jax.positions import position_scheme
from posenc_jax.tasks.base import Batch


class TrainState(NamedTuple):
    params: Any  # nnx.State of the model's parameters
    opt_state: Any
    step: jax.Array  # int32 scalar: steps taken so far
    data_key: jax.Array  # base key of the data stream


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
    init_key, data_key = jax.random.split(jax.random.key(settings.seed))
    graphdef, params = nnx.split(build_model(settings, init_key), nnx.Param)
    optimizer = build_optimizer(settings.optim, settings.train.steps)
    state = TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), data_key)
    return graphdef, state, optimizer


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


def training_batch(settings: Settings, data_key: jax.Array, step: jax.Array) -> Batch:
    """The batch of training step `step`: a pure function of (data_key, step)."""
    task = settings.task
    step_key = jax.random.fold_in(data_key, step)
    length_key, sample_key = jax.random.split(step_key)
    lengths = task.sample_lengths(length_key, settings.train.batch_size)
    batch = task.sample(sample_key, lengths, task.train_max_len, settings.model.causal)
    return position_scheme(settings.encoding, step_key, batch)


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
    """A jitted function that takes `num_steps` steps and returns the summed metric counts."""

    def loss_fn(params, batch):
        model = nnx.merge(graphdef, params)
        counts = metrics.count(model(batch.inputs, batch.positions, batch.token_mask), batch)
        return counts.nll.sum() / jnp.maximum(counts.scored.sum(), 1.0), counts

    def one_step(state: TrainState, _):
        batch = training_batch(settings, state.data_key, state.step)
        (_, counts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = project_parameters(graphdef, optax.apply_updates(state.params, updates))
        return TrainState(params, opt_state, state.step + 1, state.data_key), metrics.total(counts)

    def chunk(state: TrainState):
        state, per_step = jax.lax.scan(one_step, state, length=num_steps)
        return state, metrics.total(per_step)

    return jax.jit(chunk, donate_argnums=0)


class TrainOutcome(NamedTuple):
    graphdef: nnx.GraphDef
    params: Any
    summary: dict[str, Any]


def train(settings: Settings, on_log: Callable[[int, dict[str, float]], None]) -> TrainOutcome:
    """Run the training loop. `on_log(step, scalars)` is called at every log step (host side).

    Stops early, with summary["status"] = "diverged", if the loss becomes NaN or infinite.
    """
    cfg = settings.train
    graphdef, state, optimizer = init_state(settings)
    schedule = learning_rate_schedule(settings.optim, cfg.steps)
    # One compiled program per chunk size (a final short chunk adds one).
    chunks: dict[int, Callable] = {}
    window = None
    last: dict[str, float] = {}
    status = "completed"
    start = time.perf_counter()
    first_dispatch_s = None
    steady_start, steady_step = start, 0
    done = 0
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
            summed = {k: float(np.asarray(v)) for k, v in jax.device_get(window)._asdict().items()}
            window = None
            last = {
                "train/loss": summed["nll"] / max(summed["scored"], 1.0),
                "train/acc": summed["correct"] / max(summed["scored"], 1.0),
                "train/lr": float(np.asarray(schedule(done - 1))),
            }
            on_log(done, last)
            if not np.isfinite(last["train/loss"]):
                status = "diverged"
                break
    jax.block_until_ready(state.params)
    end = time.perf_counter()
    steady_steps = done - steady_step
    summary = {
        "status": status,
        "steps": done,
        "final_loss": last.get("train/loss"),
        "final_acc": last.get("train/acc"),
        "wall_s": end - start,
        "first_dispatch_s": first_dispatch_s,
        "steps_per_s": steady_steps / (end - steady_start) if steady_steps else None,
    }
    return TrainOutcome(graphdef, state.params, summary)
