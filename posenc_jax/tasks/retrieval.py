"""Retrieval and counting: find or count something stored earlier in the sequence.

    associative_recall:  key–value pairs, then one of the keys; answer its value (Ba et al.
                         2016, "Using Fast Weights to Attend to the Recent Past"; the recall
                         task of Zoology/H3). Keys within an example are distinct, so the
                         answer is unique.  k3 v7 k0 v2 k5 v1 | k0 -> v2
    count:               tokens, then a query token; answer how often it occurs, in decimal.
    index_lookup:        tokens, a separator, then an index in decimal; answer that token.

associative_recall: an input of length n holds ⌊(n − 1)/2⌋ pairs and the query key; an even n starts
with a filler token. Keys come from num_keys symbols, values from num_values other symbols, so an
input can hold at most num_keys pairs: inputs longer than 2·num_keys + 2 tokens do not exist, and
the settings refuse such lengths.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.errors import require_at_least
from posenc_jax.tasks.base import ClassificationTask, TaskSpec, gather_columns, uniform_tokens


@dataclasses.dataclass(frozen=True)
class AssociativeRecall(ClassificationTask):
    name = "associative_recall"
    min_input_len = 3  # one pair and the query

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
    def max_input_len(self) -> int:
        return 2 * self.num_keys + 2

    def validate(self) -> None:
        super().validate()
        require_at_least("task.num_keys", self.num_keys, 1)
        require_at_least("task.num_values", self.num_values, 2)

    def generate(self, key, lengths, padded_len):
        batch = lengths.shape[0]
        order_key, value_key, query_key = jax.random.split(key, 3)
        pairs = (lengths - 1) // 2
        # A random order of all keys per example; pair j uses the j-th key, so keys are distinct.
        keys = jnp.argsort(jax.random.uniform(order_key, (batch, self.num_keys)), axis=1).astype(
            jnp.int32
        )
        values = uniform_tokens(value_key, batch, padded_len, self.num_values)  # pair j: column j
        query = jax.random.randint(query_key, (batch,), 0, pairs)  # which pair is asked for
        offset = (lengths % 2 == 0).astype(jnp.int32)[:, None]  # the filler of even lengths
        slot = jnp.arange(padded_len)[None, :] - offset
        pair = jnp.clip(slot // 2, 0, padded_len - 1)
        pair_key = gather_columns(keys, pair)
        pair_value = self.num_keys + jnp.take_along_axis(values, pair, axis=1)
        query_token = jnp.take_along_axis(keys, query[:, None], axis=1)
        content = jnp.where(slot % 2 == 0, pair_key, pair_value)
        content = jnp.where(slot == 2 * pairs[:, None], query_token, content)
        content = jnp.where(slot < 0, self.num_keys + self.num_values, content)
        answer = jnp.take_along_axis(values, query[:, None], axis=1)
        return content.astype(jnp.int32), answer


def decimal_width(n):
    """Digits of n in base 10 (n >= 1), for an int or an int array (up to 10^9)."""
    return (
        1 + sum((n >= 10**k) * 1 for k in range(1, 10)) if isinstance(n, jax.Array) else len(str(n))
    )


def decimal_digits(values: jax.Array, width) -> jax.Array:
    """values [B] written in base 10, most significant digit first, zero-padded to `width`
    digits ([B] or int); [B, max_width] with max_width = max possible width, left-aligned."""
    max_width = 10
    place = jnp.arange(max_width)[None, :]
    exponent = jnp.asarray(width)[..., None] - 1 - place  # digit j of a width-w number
    power = jnp.where(exponent >= 0, 10 ** jnp.maximum(exponent, 0), 0)
    return jnp.where(exponent >= 0, (values[:, None] // jnp.maximum(power, 1)) % 10, 0).astype(
        jnp.int32
    )


@dataclasses.dataclass(frozen=True)
class Count(TaskSpec):
    """How often does the query token occur before it? x_1 … x_{n−1} q -> the count of q among
    the x, in base 10, most significant digit first, zero-padded to the width of n − 1:
    3 1 3 0 3 | 3 -> 3;  with n = 12: … -> 0 4. Decimal answers use the same ten digit symbols
    at every length, so longer inputs need no unseen output classes."""

    name = "count"
    min_input_len = 2
    train_min_len: int = 2
    vocab_size: int = 16

    @property
    def num_outputs(self) -> int:
        return 10

    def answer_len(self, n):
        return decimal_width(n - 1)

    def generate(self, key, lengths, padded_len):
        batch = lengths.shape[0]
        token_key, query_key = jax.random.split(key)
        tokens = uniform_tokens(token_key, batch, padded_len, self.vocab_size)
        query = jax.random.randint(query_key, (batch, 1), 0, self.vocab_size)
        index = jnp.arange(padded_len)[None, :]
        before_query = index < lengths[:, None] - 1
        count = jnp.sum((tokens == query) & before_query, axis=1)
        content = jnp.where(index == lengths[:, None] - 1, query, tokens)
        answers = decimal_digits(count, decimal_width(lengths - 1))[
            :, : self.answer_len(padded_len)
        ]
        return content, answers


@dataclasses.dataclass(frozen=True)
class IndexLookup(ClassificationTask):
    """The token at a queried index: x_0 … x_{m−1} | i -> x_i, with i written in decimal,
    zero-padded to w digits, w = the number of digits of the input length n, and m = n − 1 − w.
    n = 7: 5 2 7 4 1 | 2 -> 7;  n = 12: x_0 … x_8 | 0 3 -> x_3. Decimal indices use the same
    ten digit symbols at every length, so longer inputs need no unseen input symbols."""

    name = "index_lookup"
    min_input_len = 3  # one token, the separator, one digit
    train_min_len: int = 3
    num_symbols: int = 16  # content symbols (and answer classes); the separator and digits follow

    @property
    def vocab_size(self) -> int:
        return self.num_symbols + 11

    @property
    def num_classes(self) -> int:
        return self.num_symbols

    def validate(self) -> None:
        super().validate()
        require_at_least("task.num_symbols", self.num_symbols, 2)

    def generate(self, key, lengths, padded_len):
        batch = lengths.shape[0]
        token_key, index_key = jax.random.split(key)
        tokens = uniform_tokens(token_key, batch, padded_len, self.num_symbols)
        width = decimal_width(lengths)
        stored = (lengths - 1 - width)[:, None]
        asked = jax.random.randint(index_key, (batch, 1), 0, stored)
        digits = decimal_digits(asked[:, 0], width)  # [B, 10]
        slot = jnp.arange(padded_len)[None, :]
        digit_here = gather_columns(digits, slot - stored - 1)
        separator = self.num_symbols
        content = jnp.where(
            slot < stored, tokens, jnp.where(slot == stored, separator, separator + 1 + digit_here)
        )
        return content, jnp.take_along_axis(tokens, asked, axis=1)
