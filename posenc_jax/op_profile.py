"""Where a compiled program spends its time, per XLA operation, read from a `jax.profiler` trace.

    ops = profile_ops(compiled, lambda: compiled(state), repeats=3)
    print(format_profile(ops))

The trace (Perfetto JSON, written by `jax.profiler.trace`) holds one event per executed XLA
operation, named by the HLO instruction (`fusion.12`, `dot.3`) with its duration. The compiled
program's HLO text gives each instruction's result shape and the JAX operation it came from (its
`metadata` op_name: `jvp()/dot_general` in the forward pass, `transpose(jvp())/dot_general` in
the backward one), which together tell which part of the model a fusion is; the HLO text names
no source lines (they sit in a stack-frame table it does not print). Durations are summed per
instruction over the calls; on a CPU whose operations run on several threads at once, the sum
can exceed the wall time, so shares are of the summed time.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax

# `%fusion.3 = f32[4096,192]{1,0} fusion(...), ..., metadata={op_name="jit(f)/jvp()/dot_general"`
_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+?)(?:\{[\d,]*\})?\s.*?op_name="([^"]*)"'
)


class OpTime(NamedTuple):
    """One HLO instruction's share of the profiled time."""

    name: str  # the HLO instruction, e.g. "ynn_fusion.2"
    seconds: float  # summed over every call profiled
    share: float  # of the summed time of all instructions
    source: str  # its JAX operation and result shape, or "" if the HLO names none


def instruction_sources(hlo_text: str) -> dict[str, str]:
    """Each HLO instruction's origin, from the compiled program's text: {"fusion.3":
    "jvp()/dot_general f32[4096,192]"}, the last two parts of its op_name and its shape."""
    sources = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            name, shape, op_name = match.groups()
            sources[name] = f"{'/'.join(op_name.split('/')[-2:])} {shape}"
    return sources


def trace_op_seconds(trace_file: Path) -> dict[str, float]:
    """Seconds per HLO instruction, summed over a Perfetto trace's execution events."""
    document = json.loads(gzip.decompress(trace_file.read_bytes()))
    events = document["traceEvents"] if isinstance(document, dict) else document
    seconds: collections.Counter[str] = collections.Counter()
    for event in events:
        op = event.get("args", {}).get("hlo_op")
        if event.get("ph") == "X" and op:
            seconds[op] += event.get("dur", 0.0) * 1e-6  # microseconds
    return dict(seconds)


def profile_ops(compiled: Any, work: Callable[[], Any], repeats: int = 3) -> list[OpTime]:
    """Run `work()` (which runs `compiled`, a jax `Compiled`) `repeats` times under the
    profiler, after one untimed call, and return its instructions by time, longest first."""
    jax.block_until_ready(work())
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(repeats):
                jax.block_until_ready(work())
        (trace_file,) = Path(folder).rglob("perfetto_trace.json.gz")
        seconds = trace_op_seconds(trace_file)
    sources = instruction_sources(compiled.as_text())
    total = sum(seconds.values()) or 1.0
    ranked = sorted(seconds.items(), key=lambda item: -item[1])
    return [OpTime(name, s, s / total, sources.get(name, "")) for name, s in ranked]


def format_profile(ops: list[OpTime], top: int = 15) -> str:
    """The `top` instructions as lines: share, milliseconds, name, operation and source."""
    lines = [
        f"  {100 * op.share:5.1f}%  {1e3 * op.seconds:9.1f} ms  {op.name:<28} {op.source}"
        for op in ops[:top]
    ]
    rest = max(0.0, 1.0 - sum(op.share for op in ops[:top]))
    lines.append(f"  {100 * rest:5.1f}%  in the other instructions")
    return "\n".join(lines)
