"""Retrieval: find something stored earlier in the sequence.

    associative_recall:  key–value pairs, then one of the keys; answer its value (Ba et al.
                         2016, "Using Fast Weights to Attend to the Recent Past"; the recall
                         task of Zoology/H3). Keys within an example are distinct, so the
                         answer is unique.  k3 v7 k0 v2 k5 v1 | k0 -> v2

An input of length n holds ⌊(n − 1)/2⌋ pairs and the query key; an even n starts with a filler
token. Keys come from num_keys symbols, values from num_values other symbols, so an input can
hold at most num_keys pairs: inputs longer than 2·num_keys + 2 tokens do not exist, and the
settings refuse such lengths.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.errors import ConfigError
from posenc_jax.tasks.base import ClassificationTask, uniform_tokens


@dataclasses.dataclass(frozen=True)
class AssociativeRecall(ClassificationTask):
    name = "associative_recall"
    min_len = 3  # one pair and the query

    train_min_len: int = 3
    num_keys: int = 64  # distinct keys: enough pairs for 4x the default training length
    num_values: int = 16

    @property
    def vocab_size(self) -> int:
        return self.num_keys + self.num_values + 1  # keys, values, the filler

    @property
    def num_classes(self) -> int:
        return self.num_values

    @property
    def max_len(self) -> int:
        return 2 * self.num_keys + 2

    def validate(self) -> None:
        super().validate()
        if self.num_keys < 1 or self.num_values < 2:
            raise ConfigError(
                f"task.num_keys={self.num_keys} and task.num_values={self.num_values} must be "
                f"at least 1 and 2."
            )

    def generate(self, key, lengths, max_len):
        batch = lengths.shape[0]
        order_key, value_key, query_key = jax.random.split(key, 3)
        pairs = (lengths - 1) // 2
        # A random order of all keys per example; pair j uses the j-th key, so keys are distinct.
        keys = jnp.argsort(jax.random.uniform(order_key, (batch, self.num_keys)), axis=1).astype(jnp.int32)
        values = uniform_tokens(value_key, batch, max_len, self.num_values)  # pair j: column j
        query = jax.random.randint(query_key, (batch,), 0, pairs)  # which pair is asked for
        offset = (lengths % 2 == 0).astype(jnp.int32)[:, None]  # the filler of even lengths
        slot = jnp.arange(max_len)[None, :] - offset
        pair = jnp.clip(slot // 2, 0, max_len - 1)
        pair_key = jnp.take_along_axis(keys, jnp.clip(pair, 0, self.num_keys - 1), axis=1)
        pair_value = self.num_keys + jnp.take_along_axis(values, pair, axis=1)
        query_token = jnp.take_along_axis(keys, query[:, None], axis=1)
        content = jnp.where(slot % 2 == 0, pair_key, pair_value)
        content = jnp.where(slot == 2 * pairs[:, None], query_token, content)
        content = jnp.where(slot < 0, self.num_keys + self.num_values, content)
        answer = jnp.take_along_axis(values, query[:, None], axis=1)
        return content.astype(jnp.int32), answer
