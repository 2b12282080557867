"""Where a result came from, recorded in every results.json: the code (git commit, and whether
the working tree had uncommitted changes), the library versions, the device, XLA's flags and the
command.

    {"commit": "c8e67a1…", "dirty": false, "posenc_jax": "0.1.0", "python": "3.11.9",
     "jax": "0.10.2", "jaxlib": "0.10.2", "flax": "0.12.8", "optax": "0.2.6",
     "device": {"platform": "cpu", "kind": "cpu", "count": 1, "processes": 1},
     "xla_flags": null, "command": "posenc-train encoding=alibi task=reverse"}

`xla_flags` is the XLA_FLAGS environment variable (null if unset): on a GPU it says whether the
run asked for deterministic kernels (--xla_gpu_deterministic_ops=true; README, Determinism).

The commit is that of the repository holding the imported `posenc_jax` package (an editable
install or a checkout); an installed copy outside any repository records null for commit and
dirty, and its package version still says which release it was.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax

import posenc_jax

LIBRARIES = ("jax", "jaxlib", "flax", "optax")


def git_state(directory: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git repository holding `directory`; (None, None) outside one or
    without git. Dirty means uncommitted changes to files git knows or could add."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain")
    return commit.strip(), None if status is None else bool(status.strip())


def provenance(command: str | None = None) -> dict[str, Any]:
    """This process's provenance record (see the module docstring). `command` is the command
    that reproduces this one result; by default this process's own command line (a sweep's
    job is given its own: posenc-train with its overrides only). It holds the settings, not
    where Hydra puts the run or how it launches it (hydra.* overrides)."""
    commit, dirty = git_state(Path(posenc_jax.__file__).parent)
    device = jax.devices()[0]
    return {
        "commit": commit,
        "dirty": dirty,
        "posenc_jax": posenc_jax.__version__,
        "python": platform.python_version(),
        **{name: importlib.metadata.version(name) for name in LIBRARIES},
        "device": {
            "platform": device.platform,
            "kind": device.device_kind,
            "count": jax.device_count(),  # over every process of a distributed run
            "processes": jax.process_count(),
        },
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "command": command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
