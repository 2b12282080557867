"""Seeds as a batch axis (`train.num_seeds=N`): N independent replicas of a run in one program.

Replica i is exactly the run with `seed = seed + i` (`replica`): its own initialisation and its
own data stream, both drawn from its seed, trained and evaluated under `jax.vmap` over a leading
seed axis of the state. Compilation, start-up and dispatch are paid once for all N.

With one seed nothing is stacked and no vmap is added (`over_seeds`), so a plain run compiles the
same programs as before seeds were an axis, and its numbers do not move.

Across seeds, a multi-seed run's results hold each seed's evaluation and their mean and sample
standard deviation (`aggregate`), over the seeds that completed.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from posenc_jax import metrics
from posenc_jax.config import Settings
from posenc_jax.distributed import to_host


def seeds_of(settings: Settings) -> list[int]:
    """The seeds of a run's replicas: [seed, seed + 1, ..., seed + num_seeds - 1]."""
    return [settings.seed + i for i in range(settings.train.num_seeds)]


def replica(settings: Settings, index: int) -> Settings:
    """The settings of replica `index` as a run of its own: seed + index, one seed."""
    return dataclasses.replace(
        settings,
        seed=settings.seed + index,
        train=dataclasses.replace(settings.train, num_seeds=1),
    )


def over_seeds(fn: Callable, num_seeds: int, in_axes: Any = 0) -> Callable:
    """`fn` over the leading seed axis of its arguments (`jax.vmap` with `in_axes`) when there
    are several seeds; `fn` itself for one, whose state carries no seed axis."""
    return jax.vmap(fn, in_axes=in_axes) if num_seeds > 1 else fn


def stack(trees: Sequence[Any]) -> Any:
    """Trees of equal structure -> one tree with a leading seed axis; one tree stays as it is."""
    if len(trees) == 1:
        return trees[0]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def pick(tree: Any, index: int, num_seeds: int) -> Any:
    """Replica `index` of a (possibly stacked) tree: its slice of the seed axis."""
    return jax.tree.map(lambda leaf: leaf[index], tree) if num_seeds > 1 else tree


def split_host(tree: Any, num_seeds: int) -> list[Any]:
    """A device tree (stacked if num_seeds > 1) read back once, as one numpy tree per seed."""
    host = to_host(tree)
    return [pick(host, i, num_seeds) for i in range(num_seeds)]


def aggregate(evaluations: Sequence[dict[str, Any] | None], seeds: Sequence[int]) -> dict | None:
    """The mean over seeds of the per-seed evaluations (`evaluate.evaluate_seeds`), from those
    that exist (None: the seed diverged); None if none does.

    Every `metrics.PER_LENGTH` metric and its means keep their names and hold the mean over
    seeds, with the sample standard deviation (n - 1) beside them as `<key>_std` (None for a
    single seed). A value that is None for any seed (a length the encoding cannot represent) is
    None in the mean too. `seeds` lists the seeds averaged. Everything else (lengths, buckets,
    scoring, ...) is the same for every seed and is taken from the first; `wall_s` is the
    whole evaluation's."""
    done = [(seed, e) for seed, e in zip(seeds, evaluations, strict=True) if e is not None]
    if not done:
        return None
    first = done[0][1]
    merged: dict[str, Any] = {**first, "seeds": [seed for seed, _ in done]}
    for metric in metrics.PER_LENGTH:
        per_length = zip(*(e[metric.name] for _, e in done), strict=True)
        means, stds = zip(*(mean_std(values) for values in per_length), strict=True)
        merged[metric.name], merged[f"{metric.name}_std"] = list(means), list(stds)
        for key in (*metric.summaries, metric.ood_representable):
            merged[key], merged[f"{key}_std"] = mean_std([e[key] for _, e in done])
    return merged


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation) over seeds; the std is None for one value, and both
    are None if any value is None (not measurable for that seed)."""
    if any(value is None for value in values):
        return None, None
    numbers = [float(value) for value in values if value is not None]
    std = statistics.stdev(numbers) if len(numbers) > 1 else None
    return statistics.fmean(numbers), std
