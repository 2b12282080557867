"""Compilation bookkeeping: count XLA programs built, and JAX's persistent compilation cache."""

from __future__ import annotations

import os
from pathlib import Path

import jax
from jax import monitoring

# Emitted once per program lowered to XLA, whether it is then compiled or loaded from the
# persistent cache: so it counts the distinct programs a piece of code needs.
_LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"


class CompilationCounter:
    """Context manager counting programs lowered while it is active.

    with CompilationCounter() as compiled:
        ...
    compiled.count
    """

    def __init__(self):
        self.count = 0

    def _listener(self, event: str, duration_secs: float, **kwargs) -> None:
        if event == _LOWERING_EVENT:
            self.count += 1

    def __enter__(self) -> CompilationCounter:
        monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc_info) -> None:
        monitoring.unregister_event_duration_listener(self._listener)


def enable_persistent_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """Cache compiled programs on disk, so a second run of the same shapes skips most compile
    time (on CPU too). Defaults to $POSENC_JAX_CACHE or ~/.cache/posenc_jax/xla."""
    path = Path(
        cache_dir
        or os.environ.get("POSENC_JAX_CACHE")
        or Path.home() / ".cache" / "posenc_jax" / "xla"
    )
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path
