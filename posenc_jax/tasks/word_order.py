"""word_order: is this sentence in canonical order, or are two neighbours swapped?

Canonical order is non-decreasing token id, a rule that applies at any length. A negative
example is a canonical sentence with one adjacent pair of *different* tokens exchanged, so it
holds exactly the same tokens: a bag-of-words model is at chance (0.5).

Sampling, identical for both classes up to the final swap:
1. the swap place s is uniform on [0, n-2], so the swap falls anywhere;
2. a cut c is uniform on [1, vocab_size-1]; tokens 0..s are drawn uniformly from [0, c) and
   tokens s+1..n-1 from [c, vocab_size), then each side is sorted. This guarantees
   x_s < x_{s+1}, so the swap always changes the sentence;
3. labels alternate within a batch (1 = canonical), starting from a class drawn from the key,
   so an even batch holds exactly as many of each class and an odd one favours neither: a
   length bucket's group of a training step, or a single example, is unbiased too. A label-0
   example exchanges x_s and x_{s+1}.

Example (vocab 10, n 5, s 1, c 4): canonical [0, 3, 5, 5, 8] -> 1;  swapped [0, 5, 3, 5, 8] -> 0.
Classification: one answer slot, two classes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.tasks.base import ClassificationTask, column_uniform


@dataclasses.dataclass(frozen=True)
class WordOrder(ClassificationTask):
    name = "word_order"
    min_input_len = 2  # a swap needs two tokens

    train_min_len: int = 2
    vocab_size: int = 16

    def generate(self, key, lengths, padded_len):
        batch = lengths.shape[0]
        swap_key, cut_key, token_key, first_label_key = jax.random.split(key, 4)
        index = jnp.arange(padded_len)[None, :]
        swap_at = jax.random.randint(swap_key, (batch, 1), 0, lengths[:, None] - 1)
        cut = jax.random.randint(cut_key, (batch, 1), 1, self.vocab_size)
        unit = column_uniform(token_key, batch, padded_len)
        left = index <= swap_at
        low = jnp.where(left, 0, cut)
        high = jnp.where(left, cut, self.vocab_size)
        tokens = (low + unit * (high - low)).astype(jnp.int32)
        # Sort each side on its own; padding (index >= n) sorts to the end and is ignored.
        side_key = jnp.where(index < lengths[:, None], jnp.where(left, 0, 1), 2)
        canonical = jnp.sort(side_key * self.vocab_size + tokens, axis=1) % self.vocab_size
        source = index + (index == swap_at) - (index == swap_at + 1)
        swapped = jnp.take_along_axis(canonical, source, axis=1)
        # Alternating labels balance a batch exactly; the random first label keeps the classes
        # unbiased where a step's examples come in several batches (length buckets), each of
        # which would otherwise start at the same class.
        first_label = jax.random.randint(first_label_key, (), 0, 2)
        label = ((jnp.arange(batch) + first_label) % 2).astype(jnp.int32)
        content = jnp.where(label[:, None] == 1, canonical, swapped)
        return content, label[:, None]
