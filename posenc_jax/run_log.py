"""Where a run's numbers go: TensorBoard events (tensorboardX, no TensorFlow) and an
append-only `metrics.jsonl`, one JSON object per line: {"step": ..., "<tag>": value, ...}."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tensorboardX import SummaryWriter


def json_safe(value: Any) -> Any:
    """Replace NaN and infinities (which strict JSON cannot hold) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


class RunLog:
    def __init__(self, run_dir: Path):
        self.events = SummaryWriter(logdir=str(run_dir))
        self.jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")

    def scalars(self, step: int, values: Mapping[str, float | None]) -> None:
        """Log scalars under stable tags. None (not measurable) and non-finite values go to the
        JSON lines only, as null."""
        for tag, value in values.items():
            if value is not None and math.isfinite(value):
                self.events.add_scalar(tag, value, step)
        self.jsonl.write(json.dumps(json_safe({"step": step, **values}), allow_nan=False) + "\n")
        self.jsonl.flush()

    def figure(self, tag: str, figure, step: int) -> None:
        self.events.add_figure(tag, figure, step, close=True)

    def close(self) -> None:
        self.events.close()
        self.jsonl.close()
