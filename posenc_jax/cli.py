"""The `posenc-train` command (and `python -m posenc_jax`): Hydra at the edge.

Hydra composes `configs/train.yaml` with the command-line overrides; this module turns the
result into plain `Settings` (validated before anything compiles) and calls `run`. Unknown
config groups or keys are rejected by Hydra itself, with its list of valid choices; bad values
end with a one-paragraph `ConfigError` message and exit status 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from posenc_jax.compilation import enable_persistent_cache
from posenc_jax.config import settings_from_dict
from posenc_jax.errors import ConfigError
from posenc_jax.run import run


def config_dir() -> str:
    """`configs/` inside the installed package (wheel), else the repository's top-level one."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"posenc-jax configs not found beside {package}")


def _train(cfg: DictConfig) -> float | None:
    # JAX logs a backend warning on CPU-only machines; it is noise for this tool's users.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    try:
        settings = settings_from_dict(OmegaConf.to_container(cfg, resolve=True))
        enable_persistent_cache()
        results = run(settings, HydraConfig.get().runtime.output_dir)
    except ConfigError as error:
        print(f"posenc-train: {error}", file=sys.stderr)
        sys.exit(2)
    evaluation = results["eval"] or {}
    return evaluation.get("acc_ood")  # Hydra sweepers can optimise this


main = hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")(_train)
