"""What is measured, declared once: per-example counts, and the metrics reported per length.

Training and evaluation both reduce a batch to `Counts`: per-example *sums* (not means), so that
chunks, steps and lengths add up exactly and are divided once at the end.

`PER_LENGTH` lists the metrics that evaluation reports at every input length. Everything
downstream (results.json, TensorBoard tags, metrics.jsonl, the printed table, the plots) loops
over it, so adding a metric means one `Counts` field, its line in `count`, and one entry here.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from posenc_jax.tasks import Batch


class Counts(NamedTuple):
    """Per-example sums; each field has shape [batch] (or is summed further by the caller)."""

    nll: jax.Array  # summed negative log-likelihood over scored slots
    correct: jax.Array  # scored slots whose argmax equals the target
    scored: jax.Array  # number of scored slots
    exact: jax.Array  # 1 if every scored slot is correct (whole-sequence exact match)
    examples: jax.Array  # 1 per example, so a sum counts them


def count(logits: jax.Array, batch: Batch) -> Counts:
    """logits [B, T, outputs] against batch.targets [B, T] on batch.target_mask."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, batch.targets[..., None], axis=-1)[..., 0]
    mask = batch.target_mask
    hits = (jnp.argmax(logits, axis=-1) == batch.targets) & mask
    correct = hits.sum(axis=1)
    scored = mask.sum(axis=1)
    return Counts(
        nll=jnp.where(mask, nll, 0.0).sum(axis=1),
        correct=correct.astype(jnp.float32),
        scored=scored.astype(jnp.float32),
        exact=(correct == scored).astype(jnp.float32),
        examples=jnp.ones(correct.shape, jnp.float32),
    )


def total(counts: Counts) -> Counts:
    """Sum every field over the batch axis."""
    return Counts(*(field.sum(axis=0) for field in counts))


@dataclasses.dataclass(frozen=True)
class LengthMetric:
    """A ratio of two summed `Counts` fields, reported at every evaluated length.

    results.json holds `eval[name]` (one value per length) and the means `eval[summary + "_id"]`
    (lengths <= task.train_max_len), `eval[summary + "_ood"]` (longer ones) and
    `eval[summary + "_ood_representable"]`; TensorBoard and metrics.jsonl have
    `eval/<name>/len_NNNN` and the means as `eval/<key>`."""

    name: str  # e.g. "token_acc"
    label: str  # in plots and tables, e.g. "token accuracy"
    column: str  # the printed table's column header, at most 5 characters
    summary: str  # prefix of the in-/out-of-distribution means
    numerator: str  # a Counts field
    denominator: str  # a Counts field

    def value(self, counts: Counts) -> float:
        """The metric from one length's summed counts (each field a scalar)."""
        return float(getattr(counts, self.numerator) / getattr(counts, self.denominator))

    @property
    def summaries(self) -> tuple[str, str]:
        """The keys of its in-distribution and out-of-distribution means."""
        return f"{self.summary}_id", f"{self.summary}_ood"

    @property
    def ood_representable(self) -> str:
        """The key of its mean over the longer lengths the encoding can represent (the
        out-of-distribution mean is None as soon as one of them is not representable)."""
        return f"{self.summary}_ood_representable"


PER_LENGTH: tuple[LengthMetric, ...] = (
    LengthMetric("token_acc", "token accuracy", "tok", "acc", "correct", "scored"),
    LengthMetric("seq_acc", "exact match", "seq", "seq_acc", "exact", "examples"),
)


def summary_keys() -> list[str]:
    """Every metric's in- and out-of-distribution means: acc_id, acc_ood, seq_acc_id, ...
    (a function, so that a metric added to PER_LENGTH, even at run time, is included)."""
    return [key for metric in PER_LENGTH for key in metric.summaries]
