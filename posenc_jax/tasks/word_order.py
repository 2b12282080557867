"""word_order: is this sentence in canonical order, or are two neighbours swapped?

Canonical order is ascending token id over n distinct tokens, a rule that applies at any length.
A negative example is a canonical sentence with one adjacent pair exchanged, at a uniformly
random place; it has exactly the same tokens, so a bag-of-words model is at chance (0.5). Labels
alternate within a batch, so both classes are exactly balanced.

Example (vocab 10): [1, 4, 5, 8] -> 1 (canonical);  [1, 5, 4, 8] -> 0 (swap at index 1).
Classification: one answer slot, two classes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.errors import ConfigError
from posenc_jax.tasks.base import TaskSpec


@dataclasses.dataclass(frozen=True)
class WordOrder(TaskSpec):
    name = "word_order"
    min_len = 2  # a swap needs two tokens
    kind = "classification"

    train_min_len: int = 2
    vocab_size: int = 128  # distinct tokens per sentence, so this caps the longest sentence

    @property
    def num_outputs(self) -> int:
        return 2

    def answer_len(self, n):
        return jnp.ones_like(n) if isinstance(n, jax.Array) else 1

    def validate_length(self, n: int, setting: str) -> None:
        if n > self.vocab_size:
            raise ConfigError(
                f"{setting}={n} is longer than task.vocab_size={self.vocab_size}: word_order "
                f"sentences use distinct tokens, so no sentence can be longer than the vocabulary. "
                f"Raise task.vocab_size to at least {n}."
            )

    def generate(self, key, lengths, max_len):
        batch = lengths.shape[0]
        pick_key, swap_key = jax.random.split(key)
        # The max_len highest of vocab_size uniform scores index a random set of distinct ids.
        # top_k is sorted, so the first n ids (and the example) do not depend on max_len.
        _, picked = jax.lax.top_k(jax.random.uniform(pick_key, (batch, self.vocab_size)), max_len)
        index = jnp.arange(max_len)[None, :]
        valid = index < lengths[:, None]
        canonical = jnp.sort(jnp.where(valid, picked, self.vocab_size), axis=1)
        swap_at = jax.random.randint(swap_key, (batch, 1), 0, lengths[:, None] - 1)
        source = index + (index == swap_at) - (index == swap_at + 1)
        swapped = jnp.take_along_axis(canonical, source, axis=1)
        label = (jnp.arange(batch) % 2).astype(jnp.int32)  # 1 = canonical
        content = jnp.where(label[:, None] == 1, canonical, swapped)
        return content.astype(jnp.int32), label[:, None]
