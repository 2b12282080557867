"""Several hosts (`train.distributed=true`): one run over the devices of several processes.

JAX's own multi-controller runtime does the work. Every process runs the same command;
`jax.distributed.initialize()` finds the others through the cluster's environment (SLURM's
`srun`, Open MPI's `mpirun`, Cloud TPU) and makes every process's devices one global list, over
which `train.sharding` builds its mesh as on one host. Each process then computes its share of
every program, and XLA's collectives (NCCL on GPUs, gloo between CPU processes) join them.

Outputs: process 0 alone writes the run folder (config, logs, TensorBoard events, plots,
results.json). The checkpoint is the exception: orbax saves a global array from every process
that holds a piece of it, so every process calls it. Host reads of arrays spread over several
processes gather them first (`to_host`), so every process sees the same numbers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from posenc_jax.config import Settings
from posenc_jax.errors import ConfigError, described


def initialize(settings: Settings) -> None:
    """Join the other processes of the run if train.distributed is set (once per process: a
    sweep runs several jobs in one). Must come before anything touches a JAX device.

    Raises ConfigError if the environment names no cluster that JAX can read."""
    if not settings.train.distributed or jax.distributed.is_initialized():
        return
    try:
        jax.distributed.initialize()
    except (ValueError, RuntimeError) as error:
        raise ConfigError(
            f"train.distributed=true joins the processes that a cluster launcher started "
            f"(SLURM's srun, Open MPI's mpirun, Cloud TPU), but jax.distributed.initialize() "
            f"found none here ({described(error)}). Start the command with the "
            f"launcher, e.g. srun posenc-train ... (README: Running a study), or leave "
            f"train.distributed=false for one process."
        ) from error
    # Collectives between CPU processes need an implementation (GPUs and TPUs bring their own);
    # it is read when the CPU backend starts, after this.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def require_same_run(settings: Settings, run_dir: Path) -> None:
    """Refuse, in every process at once, a distributed run whose processes were given different
    settings or run folders: each would compute its share of a different run (wrong numbers, or
    a checkpoint that never completes). One gather of a 32-byte fingerprint per process.

    Raises ConfigError naming the processes that differ from process 0."""
    if jax.process_count() == 1:
        return
    described = json.dumps([settings.to_dict(), str(run_dir)], sort_keys=True, default=str)
    fingerprint = np.frombuffer(hashlib.sha256(described.encode()).digest(), np.uint8)
    every = np.asarray(multihost_utils.process_allgather(fingerprint))  # [processes, 32]
    differing = [index for index, row in enumerate(every) if not np.array_equal(row, every[0])]
    if differing:
        raise ConfigError(
            f"The {len(every)} processes of this distributed run were not given the same "
            f"settings and run folder: process(es) {differing} differ from process 0 (this is "
            f"process {jax.process_index()}, with folder {run_dir}). Every process must run the "
            f"same command, as srun does; name the folder with hydra.run.dir=... so that no "
            f"process names it by its own clock. Nothing was written."
        )


def writes_outputs() -> bool:
    """Whether this process writes the run folder: process 0 of a distributed run, and the only
    process of any other."""
    return jax.process_index() == 0


def to_host(tree: Any) -> Any:
    """A tree of arrays as numpy arrays on this host, gathered from every process that holds a
    piece of one (each process then holds the whole value)."""

    def gather(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return multihost_utils.process_allgather(leaf, tiled=True)
        return leaf

    # One device_get for the whole tree: its transfers overlap.
    return jax.device_get(jax.tree.map(gather, tree))
