"""Context-sensitive string tasks of the Chomsky-hierarchy suite (Delétang et al. 2023, ICLR;
Table 1), as in google-deepmind/neural_networks_chomsky_hierarchy. Binary strings unless noted.

    duplicate_string:   w -> w w                                 101 -> 101101
    odds_first:         s1 s2 s3 s4 … -> s1 s3 … s2 s4 …          00110101 -> 0100 0111
    bucket_sort:        tokens of a 5-letter alphabet, sorted     10204112 -> 00111224
    missing_duplicate:  w w with one symbol replaced by `_` (a trailing `#` pads odd lengths);
                        answer the missing symbol (one class)     0110 01_0 -> 1

odds_first follows the paper and the reference docstring (1-based odd positions first); the
reference code instead puts 0-based odd indices first, which only swaps the two halves.
missing_duplicate needs two symbols, so its shortest input is 2.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.tasks.base import ClassificationTask, TaskSpec, gather_columns, uniform_tokens


@dataclasses.dataclass(frozen=True)
class DuplicateString(TaskSpec):
    name = "duplicate_string"
    vocab_size: int = 2  # the paper's binary alphabet

    def answer_len(self, n):
        return 2 * n

    def generate(self, key, lengths, padded_len):
        content = uniform_tokens(key, lengths.shape[0], padded_len, self.vocab_size)
        slot = jnp.arange(2 * padded_len)[None, :]
        return content, gather_columns(content, slot % lengths[:, None])


@dataclasses.dataclass(frozen=True)
class OddsFirst(TaskSpec):
    name = "odds_first"
    vocab_size: int = 2  # the paper's binary alphabet

    def generate(self, key, lengths, padded_len):
        content = uniform_tokens(key, lengths.shape[0], padded_len, self.vocab_size)
        slot = jnp.arange(padded_len)[None, :]
        first_half = (lengths[:, None] + 1) // 2  # s1, s3, … : 0-based indices 0, 2, 4, …
        source = jnp.where(slot < first_half, 2 * slot, 2 * (slot - first_half) + 1)
        return content, gather_columns(content, source)


@dataclasses.dataclass(frozen=True)
class BucketSort(TaskSpec):
    name = "bucket_sort"
    vocab_size: int = 5  # Delétang et al.'s value

    def generate(self, key, lengths, padded_len):
        content = uniform_tokens(key, lengths.shape[0], padded_len, self.vocab_size)
        inside = jnp.arange(padded_len)[None, :] < lengths[:, None]
        # Padding sorts after every real token, so the first n answers are the sorted input.
        return content, jnp.sort(jnp.where(inside, content, self.vocab_size), axis=1)


MISSING, FILLER = 2, 3  # the placeholder of the removed symbol, and the odd-length pad


@dataclasses.dataclass(frozen=True)
class MissingDuplicate(ClassificationTask):
    name = "missing_duplicate"
    min_input_len = 2
    vocab_size = 4  # 0, 1, the placeholder, the pad

    train_min_len: int = 2

    def generate(self, key, lengths, padded_len):
        batch = lengths.shape[0]
        bit_key, missing_key = jax.random.split(key)
        bits = uniform_tokens(bit_key, batch, padded_len, 2)
        half = (lengths // 2)[:, None]
        slot = jnp.arange(padded_len)[None, :]
        doubled = gather_columns(bits, slot % half)  # w w, then garbage past 2·half
        missing = jax.random.randint(missing_key, (batch, 1), 0, 2 * half)
        content = jnp.where(slot == missing, MISSING, jnp.where(slot < 2 * half, doubled, FILLER))
        return content, gather_columns(bits, missing % half)
