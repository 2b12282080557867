"""A run's state on disk (orbax-checkpoint): the trained parameters, so `posenc-eval` can come
back to a finished run, and training checkpoints, so an interrupted run can resume.

    <run_dir>/checkpoint/   the model's nnx.Param state, written once training has completed;
                            with train.num_seeds > 1, every array has a leading seed axis
    <run_dir>/train_state/  every train.checkpoint_every steps and at the end of training:
                            everything training needs to go on (`TrainingCheckpoints`)

Orbax needs absolute paths and, to give back typed arrays, an abstract target: the model that
the run's own settings build, traced with `nnx.eval_shape` so that nothing is computed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from posenc_jax import metrics
from posenc_jax.config import Settings
from posenc_jax.distributed import to_host
from posenc_jax.errors import ConfigError, described
from posenc_jax.model import build_model
from posenc_jax.train import TrainState, abstract_init_state

CHECKPOINT_DIR = "checkpoint"
TRAIN_STATE_DIR = "train_state"


def save_params(run_dir: Path, params: Any) -> Path:
    """Write `params` (an nnx.State) under run_dir/checkpoint and wait until it is on disk. A
    run resumed after it was written writes the same parameters over it."""
    path = Path(run_dir).absolute() / CHECKPOINT_DIR
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, params, force=True)
    checkpointer.wait_until_finished()
    return path


def restore_params(run_dir: Path, settings: Settings) -> tuple[nnx.GraphDef, Any]:
    """(graphdef, params) of the model saved in run_dir; ConfigError if missing or unreadable."""
    path = Path(run_dir).absolute() / CHECKPOINT_DIR
    if not path.is_dir():
        raise ConfigError(
            f"{path} does not exist, so {run_dir} has no saved parameters to evaluate. Runs save "
            f"them when training completes; a diverged run, or one made before checkpoints "
            f"existed, has none: train it again with posenc-train."
        )
    abstract = nnx.eval_shape(lambda: build_model(settings, jax.random.key(0)))
    graphdef, target = nnx.split(abstract, nnx.Param)
    seed_axis = (settings.train.num_seeds,) if settings.train.num_seeds > 1 else ()
    # Restored onto this process's first device, whatever devices the run was split over
    # (train.sharding): orbax would otherwise insist on the saved layout's device count.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((*seed_axis, *a.shape), a.dtype, sharding=device), target
    )
    try:
        params = ocp.StandardCheckpointer().restore(path, target)
    except Exception as error:  # orbax raises many types for unreadable files; all mean the same
        raise ConfigError(
            f"The checkpoint {path} is corrupt or does not match the run's config.yaml "
            f"({described(error)}). Nothing was evaluated and no file was changed; "
            f"train the run again with posenc-train."
        ) from error
    return graphdef, params


class TrainingCheckpoints:
    """Checkpoints to resume training from: <run_dir>/train_state/<step>/, written by orbax's
    CheckpointManager (asynchronously: training goes on while one is written; a checkpoint
    counts only once complete, so one killed mid-save is ignored). Each holds the train state
    (parameters, optimizer state, step, data key) and `progress`, a JSON object: the replicas'
    status so far and where each log ended (`run_log.LogPosition`). The newest
    train.checkpoints_to_keep are kept."""

    def __init__(self, run_dir: Path, keep: int):
        self.folder = Path(run_dir).absolute() / TRAIN_STATE_DIR
        self._manager = ocp.CheckpointManager(
            self.folder,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def save(
        self,
        step: int,
        state: TrainState,
        progress: dict[str, Any],
        window: metrics.Counts | None = None,
    ) -> None:
        """Start writing the checkpoint of `step` (returns before it is on disk). `window`, the
        metric counts since the last log step, goes into the progress record as exact numbers
        (float32 values are exact in JSON's doubles)."""
        if window is not None:
            window = jax.tree.map(
                lambda a: {"dtype": a.dtype.name, "values": a.tolist()}, to_host(window)
            )
        stored = _with_key_data(state)
        progress = {**progress, "window": window and window._asdict()}
        progress["sha256"] = checkpoint_digest(stored, progress)
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(stored), progress=ocp.args.JsonSave(progress)
            ),
        )

    def latest(
        self, settings: Settings
    ) -> tuple[TrainState, dict[str, Any], metrics.Counts | None] | None:
        """(state, progress, window) of the newest complete checkpoint, on this process's first
        device; None if there is none."""
        step = self._manager.latest_step()
        if step is None:
            return None
        _, abstract, _ = abstract_init_state(settings)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
            jax.eval_shape(_with_key_data, abstract),
        )
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), progress=ocp.args.JsonRestore()
            ),
        )
        state, progress = restored["state"], restored["progress"]
        expected = progress.pop("sha256", None)
        if expected is None or checkpoint_digest(state, progress) != expected:
            raise ValueError(
                f"the checkpoint of step {step} does not match the SHA-256 digest saved with "
                f"it (or has none): its files were changed after the save"
            )
        # A checkpoint copied in from another run (another seed, another learning rate) is
        # whole and matches its digest: the settings it was saved with say whose it is.
        if progress.pop("config", None) != json.loads(json.dumps(settings.to_dict())):
            raise ValueError(
                f"the checkpoint of step {step} was saved by a run with other settings"
            )
        window = progress.pop("window", None)
        if window is not None:
            window = metrics.Counts(
                **{k: jnp.asarray(v["values"], v["dtype"]) for k, v in window.items()}
            )
        return state._replace(data_key=jax.random.wrap_key_data(state.data_key)), progress, window

    def close(self) -> None:
        """Wait until every checkpoint started is on disk."""
        self._manager.wait_until_finished()
        self._manager.close()


def checkpoint_digest(state: Any, progress: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint: the state's values (dtype, shape and bytes of every leaf, in
    tree order, gathered on the host) and the progress record (as canonical JSON). Orbax keeps
    no checksum: a byte changed in a saved file can read back as other numbers without an
    error, and an edited log position would cut a log mid-line. A checkpoint carries this
    digest of what was saved, and a restore that does not reproduce it is refused."""
    digest = hashlib.sha256(json.dumps(progress, sort_keys=True).encode())
    for leaf in jax.tree.leaves(to_host(state)):
        array = np.ascontiguousarray(leaf)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _with_key_data(state: TrainState) -> TrainState:
    # Orbax stores arrays of numbers; a typed PRNG key is stored as its raw bits.
    return state._replace(data_key=jax.random.key_data(state.data_key))
