"""Several devices (`train.sharding`): the batch over a `data` mesh axis, or the seeds over a
`seeds` axis. JAX's own SPMD partitioning does the work; nothing here moves data by hand.

- `data`: the train state is replicated on every device, and each step's batch is split along
  its examples (a sharding constraint right where the batch is drawn). XLA partitions the
  forward and backward passes by example and all-reduces the gradients, so every device holds
  the same updated state. Evaluation splits each chunk of examples the same way.
- `seeds`: with train.num_seeds=N, the N replicas' states (stacked on a leading axis) are split
  over the devices, N/devices replicas each. Replicas never talk to one another, so nothing is
  communicated: for tiny models, usually the better use of many devices.
- null (the default): one device.

Either way the numbers are those of a one-device run, to float tolerance (the data are drawn
as one global batch, whatever its placement; reductions may be summed in another order).
Several hosts (`jax.distributed.initialize()`, see README) see all their devices in one mesh.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from posenc_jax.config import Settings
from posenc_jax.errors import ConfigError
from posenc_jax.length_buckets import (
    pass_sizes,
    run_buckets,
    smallest_microbatch,
    training_buckets,
)


def device_mesh(settings: Settings, training: bool = True) -> Mesh | None:
    """The run's one-axis mesh over every device (axis named by train.sharding); None for one
    device. Raises ConfigError if the devices cannot split the work evenly: the replicas for
    `seeds`; for `data`, every pass of a training step (evaluation, training=False, rounds its
    chunks instead and needs no check)."""
    axis = settings.train.sharding
    if axis is None:
        return None
    if axis == "seeds" and settings.train.num_seeds == 1:
        raise ConfigError(
            "train.sharding=seeds splits the replicas of train.num_seeds over the devices, but "
            "train.num_seeds=1 has one replica and nothing to split; set train.num_seeds to a "
            "multiple of the device count, train.sharding=data to split each batch instead, or "
            "train.sharding=null for one device."
        )
    devices = jax.device_count()
    if axis == "seeds" and settings.train.num_seeds % devices:
        raise ConfigError(
            f"train.sharding=seeds splits train.num_seeds={settings.train.num_seeds} over the "
            f"{devices} visible {_platform()} device(s), which does not divide evenly; choose a "
            f"multiple of {devices}, set train.sharding=null for one device, or make fewer "
            f"devices visible ({_visible_devices_setting()})."
        )
    if axis == "data" and training:
        require_even_passes(settings, devices)
    # Auto: XLA's partitioner places what the constraints leave open (the activations).
    return jax.make_mesh((devices,), (axis,), axis_types=(jax.sharding.AxisType.Auto,))


def _platform() -> str:
    return jax.devices()[0].platform


def _visible_devices_setting() -> str:
    """What decides the number of devices a process sees, on this platform."""
    return {
        "cpu": "XLA_FLAGS=--xla_force_host_platform_device_count",
        "gpu": "CUDA_VISIBLE_DEVICES",
        "tpu": "TPU_VISIBLE_CHIPS",
    }.get(_platform(), "the device environment variables")


def require_even_passes(settings: Settings, devices: int) -> None:
    """Every pass of a step (each length bucket's group, in train.microbatch slices) must split
    evenly over the devices: one that does not would run whole on every device, unsplit.
    Raises ConfigError with the nearest batch size (and microbatch) that split."""
    train, task = settings.train, settings.task
    sizes = pass_sizes(run_buckets(settings), train.microbatch)
    if all(size % devices == 0 for size in sizes):
        return

    def split_with(batch_size: int) -> tuple[int, int | None] | None:
        """(batch_size, a microbatch) whose every pass splits, if the bucket shares of
        `batch_size` do: slices a multiple of `devices`, at least the asked microbatch rounded
        up to one, and few enough passes."""
        buckets = training_buckets(
            task.train_min_len, task.train_max_len, train.length_buckets, batch_size
        )
        if any(bucket.examples % devices for bucket in buckets):
            return None
        if train.microbatch is None:
            return batch_size, None
        fewest = max(train.microbatch, smallest_microbatch(buckets))
        return batch_size, -(-fewest // devices) * devices

    # A batch of devices × (number of lengths) × m gives every bucket a multiple of `devices`,
    # so the nearest batch that splits (the smaller on a tie) lies within that distance.
    lengths = task.train_max_len - task.train_min_len + 1
    whole = devices * lengths * -(-train.batch_size // (devices * lengths))
    batch_size, microbatch = next(
        fitting
        for distance in range(whole - train.batch_size + 1)
        for size in (train.batch_size - distance, train.batch_size + distance)
        if size >= devices * train.length_buckets and (fitting := split_with(size))
    )
    choices = [f"train.batch_size={batch_size}"] if batch_size != train.batch_size else []
    if microbatch != train.microbatch:
        choices.append(f"train.microbatch={microbatch}")
    shared = (
        f" shared by train.length_buckets={train.length_buckets} buckets in proportion to "
        f"their numbers of lengths"
        if train.length_buckets > 1
        else ""
    )
    slices = f", in slices of train.microbatch={train.microbatch}" if train.microbatch else ""
    raise ConfigError(
        f"train.sharding=data splits every pass of a training step over the {devices} visible "
        f"{_platform()} devices, but the passes hold {sizes} examples (train.batch_size="
        f"{train.batch_size}{shared}{slices}); each must be a multiple of {devices}. Choose "
        f"{' and '.join(choices)}, set train.sharding=null for one device, or make fewer "
        f"devices visible ({_visible_devices_setting()})."
    )


def place_state(state: Any, mesh: Mesh | None) -> Any:
    """The train state (or the parameters alone) placed for `mesh`: split along its leading
    (seed) axis for `seeds`, replicated for `data`; unchanged without a mesh."""
    if mesh is None:
        return state

    def place(leaf: jax.Array, sharding: NamedSharding) -> jax.Array:
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            # device_put refuses typed keys for a mesh over several processes: place their bits.
            bits = jax.device_put(jax.random.key_data(leaf), sharding)
            return jax.random.wrap_key_data(bits, impl=jax.random.key_impl(leaf))
        return jax.device_put(leaf, sharding)

    return jax.tree.map(place, state, state_sharding(state, mesh))


def state_sharding(state: Any, mesh: Mesh) -> Any:
    """A tree of NamedShardings matching `state` (see `place_state`)."""
    (axis,) = mesh.axis_names
    spec = PartitionSpec(axis) if axis == "seeds" else PartitionSpec()
    return jax.tree.map(lambda _: NamedSharding(mesh, spec), state)


def data_devices(mesh: Mesh | None) -> int:
    """The devices a `data` mesh splits every batch over; 1 for any other mesh or none."""
    return mesh.devices.size if mesh is not None and mesh.axis_names == ("data",) else 1


def split_examples(tree: Any, mesh: Mesh | None) -> Any:
    """Inside jit: every array of `tree` (a batch, [examples, ...]) split along its examples over
    a `data` mesh; unchanged for any other mesh. Their number always divides evenly:
    `device_mesh` refuses training passes that would not, and evaluation rounds its chunks."""
    devices = data_devices(mesh)
    if mesh is None or devices == 1:
        return tree

    def constrain(leaf: jax.Array) -> jax.Array:
        if leaf.shape[0] % devices:
            # An uneven batch would run whole on every device: a bug, not a user's setting.
            raise ValueError(f"{leaf.shape[0]} examples do not split over {devices} devices")
        return jax.lax.with_sharding_constraint(leaf, NamedSharding(mesh, PartitionSpec("data")))

    return jax.tree.map(constrain, tree)
