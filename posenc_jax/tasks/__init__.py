"""Synthetic, order-sensitive tasks, chosen by name.

This module is the single registry: adding a task means one module here, one YAML in
`configs/task/` whose `name:` matches, and one test against a plain-Python rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from posenc_jax.spec import build_spec
from posenc_jax.tasks.arithmetic import Addition, BinaryAddition, BinaryMultiplication, ComputeSqrt
from posenc_jax.tasks.base import ANSWER_ID, NUM_SPECIAL, PAD_ID, Batch, TaskSpec, layout
from posenc_jax.tasks.context_free import (
    ModularArithmeticBrackets,
    SolveEquation,
    StackManipulation,
)
from posenc_jax.tasks.context_sensitive import (
    BucketSort,
    DuplicateString,
    MissingDuplicate,
    OddsFirst,
)
from posenc_jax.tasks.copy_reverse import Copy, Reverse
from posenc_jax.tasks.regular import CycleNavigation, EvenPairs, ModularArithmetic, Parity
from posenc_jax.tasks.retrieval import AssociativeRecall, Count, IndexLookup
from posenc_jax.tasks.sort import Sort
from posenc_jax.tasks.word_order import WordOrder

REGISTRY: dict[str, type[TaskSpec]] = {
    spec.name: spec
    for spec in (
        WordOrder,
        Copy,
        Reverse,
        EvenPairs,
        Parity,
        CycleNavigation,
        ModularArithmetic,
        DuplicateString,
        OddsFirst,
        BucketSort,
        MissingDuplicate,
        BinaryAddition,
        BinaryMultiplication,
        ComputeSqrt,
        StackManipulation,
        AssociativeRecall,
        Count,
        IndexLookup,
        Addition,
        Sort,
        ModularArithmeticBrackets,
        SolveEquation,
    )
}


def available() -> list[str]:
    """The sorted names of all tasks."""
    return sorted(REGISTRY)


def make_task(raw: Mapping[str, Any]) -> TaskSpec:
    """Build a task spec from `{"name": ..., **params}`; raises ConfigError if unknown."""
    return build_spec("task", REGISTRY, raw)


__all__ = [
    "ANSWER_ID",
    "NUM_SPECIAL",
    "PAD_ID",
    "Batch",
    "REGISTRY",
    "TaskSpec",
    "available",
    "layout",
    "make_task",
]
