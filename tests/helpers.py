"""Helpers shared by the tests: the real Hydra config (the path users take) composed into
Settings, and encodings with perturbed parameters."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import jax
from flax import nnx
from hydra import compose, initialize_config_dir

from posenc_jax import run as run_module
from posenc_jax.cli import compose_settings, config_dir
from posenc_jax.config import Settings
from posenc_jax.encodings import REGISTRY as ENCODINGS
from posenc_jax.encodings import PositionalEncoding
from posenc_jax.encodings.base import DigitPositions
from posenc_jax.inspection import build_encoding
from posenc_jax.tasks import REGISTRY as TASKS

# Small, fast settings for tests: a short training run and a short evaluation range.
FAST = [
    "train.steps=20",
    "train.batch_size=16",
    "train.log_every=10",
    "train.steps_per_dispatch=5",
    "model.d_model=32",
    "task.train_max_len=6",
    "eval.max_len=12",
    "eval.examples_per_length=16",
]


# What two runs of one command may differ in: the time things took, and (with "provenance")
# the process's record of itself.
TIMING = frozenset({"wall_s", "first_dispatch_s", "steps_per_s"})


def without_timing(document, ignore: frozenset[str] = TIMING | {"provenance"}):
    """A results document with the `ignore` fields removed at every depth."""
    if isinstance(document, dict):
        return {k: without_timing(v, ignore) for k, v in document.items() if k not in ignore}
    if isinstance(document, list):
        return [without_timing(item, ignore) for item in document]
    return document


def posenc_train(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """posenc-train with `args` in a process of its own (its output captured as text)."""
    return subprocess.run(
        [sys.executable, "-m", "posenc_jax", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stop_requested_at_ask(monkeypatch, ask: int) -> None:
    """Make the next run's SIGTERM flag (`run.sigterm_requests_stop`) say yes at its ask
    number `ask` (0-based): training asks after each chunk, and once more after its last."""
    asks = iter(range(10**6))

    @contextlib.contextmanager
    def requested():
        yield lambda: next(asks) == ask

    monkeypatch.setattr(run_module, "sigterm_requests_stop", requested)


def compose_config(overrides: list[str], hydra: bool = False):
    """The train config composed with `overrides`; with `hydra`, Hydra's own section too."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=hydra)


def make_settings(*overrides: str, fast: bool = True) -> Settings:
    return compose_settings((FAST if fast else []) + list(overrides))


def modes(encoding: str) -> list[bool]:
    """The model modes (`model.causal`) encoding `encoding` works in: decoders only for those
    whose official code defines only the causal form (FoX, stick-breaking, PaTH)."""
    return [True] if ENCODINGS[encoding].decoder_only_because else [False, True]


def task_for(encoding: str, task: str) -> str:
    """`task`, or binary_addition where `task` gives no digit roles and the encoding needs
    them (Abacus, position coupling)."""
    needs_roles = issubclass(ENCODINGS[encoding], DigitPositions)
    return "binary_addition" if needs_roles and TASKS[task]().why_no_digit_roles() else task


def perturb_parameters(module: nnx.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Add N(0, scale²) noise to every parameter of `module`, in place.

    Some encodings start from parameters that hide their structure (CoPE's position table is
    zeros, as in the official code); properties such as shift invariance or broken permutation
    symmetry must hold for generic parameter values, not only at initialisation."""
    state = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [
        leaf + scale * jax.random.normal(key, leaf.shape)
        for leaf, key in zip(leaves, keys, strict=True)
    ]
    nnx.update(module, jax.tree.unflatten(treedef, noisy))


def perturbed_encoding(
    name: str,
    *,
    causal: bool = False,
    d_model: int = 8,
    num_heads: int = 2,
    num_layers: int = 2,
    perturb: bool = True,
    **params,
) -> PositionalEncoding:
    """One encoding module on its own (no Transformer), by default with perturbed parameters."""
    module = build_encoding(
        name, num_heads=num_heads, d_model=d_model, num_layers=num_layers, causal=causal, **params
    )
    if perturb:
        perturb_parameters(module, 0.1, 1)
    return module


def run_in_process(command, argv: list[str], capsys, hydra: bool = True) -> tuple[int, str, str]:
    """Run a console-script entry point (`posenc_jax.cli.main`, ...) in this process with
    `argv`, as the shell would: returns (exit status, stdout, stderr). In-process, so that a
    test pays no second JAX import; `test_cli_trains_decoder_and_prints_table` runs the real
    executable once.

    For a Hydra command (`hydra=True`), Hydra is told to leave logging alone: configuring it
    would close the handlers that pytest captures logs with."""
    if hydra:
        argv = [*argv, "hydra/job_logging=none", "hydra/hydra_logging=none"]
    saved_argv = sys.argv
    sys.argv = ["posenc", *argv]
    try:
        command()
        status = 0
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else 1
    finally:
        sys.argv = saved_argv
    out, err = capsys.readouterr()
    return status, out, err
