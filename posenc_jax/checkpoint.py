"""A finished run's parameters on disk (orbax-checkpoint), so `posenc-eval` can come back to it.

    <run_dir>/checkpoint/   the model's nnx.Param state, written once training has completed;
                            with train.num_seeds > 1, every array has a leading seed axis

Orbax needs absolute paths and, to give back typed arrays, an abstract target: the model that
the run's own settings build, traced with `nnx.eval_shape` so that nothing is computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from posenc_jax.config import Settings
from posenc_jax.errors import ConfigError
from posenc_jax.model import build_model

CHECKPOINT_DIR = "checkpoint"


def save_params(run_dir: Path, params: Any) -> Path:
    """Write `params` (an nnx.State) under run_dir/checkpoint and wait until it is on disk."""
    path = Path(run_dir).absolute() / CHECKPOINT_DIR
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, params)
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
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise ConfigError(
            f"The checkpoint {path} is corrupt or does not match the run's config.yaml "
            f"({type(error).__name__}: {reason}). Nothing was evaluated and no file was changed; "
            f"train the run again with posenc-train."
        ) from error
    return graphdef, params
