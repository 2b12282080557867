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
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from posenc_jax.config import Settings
from posenc_jax.errors import ConfigError


def device_mesh(settings: Settings) -> Mesh | None:
    """The run's one-axis mesh over every device (axis named by train.sharding); None for one
    device. Raises ConfigError if the devices cannot split the work evenly."""
    axis = settings.train.sharding
    if axis is None:
        return None
    if axis == "seeds" and settings.train.num_seeds == 1:
        raise ConfigError(
            "train.sharding=seeds splits the replicas of train.num_seeds over the devices, but "
            "train.num_seeds=1 has one replica and nothing to split; set train.num_seeds to a "
            "multiple of the device count, or train.sharding=data to split each batch instead."
        )
    devices = jax.device_count()
    size, what = (
        (settings.train.batch_size, "train.batch_size")
        if axis == "data"
        else (settings.train.num_seeds, "train.num_seeds")
    )
    if size % devices:
        platform = jax.devices()[0].platform
        raise ConfigError(
            f"train.sharding={axis} splits {what}={size} over the {devices} visible {platform} "
            f"device(s), which does not divide evenly; choose a multiple of {devices}, set "
            f"train.sharding=null for one device, or make fewer devices visible "
            f"(CUDA_VISIBLE_DEVICES)."
        )
    # Auto: XLA's partitioner places what the constraints leave open (the activations).
    return jax.make_mesh((devices,), (axis,), axis_types=(jax.sharding.AxisType.Auto,))


def place_state(state: Any, mesh: Mesh | None) -> Any:
    """The train state placed for `mesh`: split along its leading (seed) axis for `seeds`,
    replicated for `data`; unchanged without a mesh."""
    if mesh is None:
        return state
    return jax.device_put(state, state_sharding(state, mesh))


def state_sharding(state: Any, mesh: Mesh) -> Any:
    """A tree of NamedShardings matching `state` (see `place_state`)."""
    (axis,) = mesh.axis_names
    spec = PartitionSpec(axis) if axis == "seeds" else PartitionSpec()
    return jax.tree.map(lambda _: NamedSharding(mesh, spec), state)


def split_examples(tree: Any, mesh: Mesh | None) -> Any:
    """Inside jit: every array of `tree` split along its first (example) axis over a `data`
    mesh, when that axis divides evenly (else left to XLA); unchanged for any other mesh."""
    if mesh is None or mesh.axis_names != ("data",):
        return tree
    devices = mesh.devices.size

    def constrain(leaf: jax.Array) -> jax.Array:
        if leaf.ndim == 0 or leaf.shape[0] % devices:
            return leaf
        return jax.lax.with_sharding_constraint(leaf, NamedSharding(mesh, PartitionSpec("data")))

    return jax.tree.map(constrain, tree)
