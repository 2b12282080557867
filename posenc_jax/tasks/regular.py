"""The regular tasks of the Chomsky-hierarchy suite (Delétang et al. 2023, "Neural Networks and
the Chomsky Hierarchy", ICLR; Table 1), as in google-deepmind/neural_networks_chomsky_hierarchy.
Each reads a whole string and answers one class.

    even_pairs:          binary string; is the number of unequal neighbours ("01" or "10") odd?
                         0110 -> 2 pairs -> 0;   011 -> 1 pair -> 1
    parity:              binary string; is the number of 1s odd?          1010100 -> 1
    cycle_navigation:    moves on a cycle of 5 states, token t moves by t − 1 (0 = left,
                         1 = stay, 2 = right), starting at state 0; answer the final state.
                         2 2 0 1 -> +1 +1 −1 +0 -> 1
    modular_arithmetic:  residues in {0..4} alternating with operators +, −, *; answer the value
                         modulo 5, with * binding tighter than + and −.
                         1 + 2 * 3 -> 7 -> 2;   1 − 1 − 1 -> 4

Delétang et al. feed modular_arithmetic only odd lengths. Here every length is valid: an even
length ends with the blank symbol `_` in the last operator slot, which ends the expression (so
its value is that of the odd-length prefix).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.errors import require_at_least
from posenc_jax.tasks.base import ClassificationTask, uniform_tokens


@dataclasses.dataclass(frozen=True)
class EvenPairs(ClassificationTask):
    name = "even_pairs"
    vocab_size = 2

    def generate(self, key, lengths, padded_len):
        bits = uniform_tokens(key, lengths.shape[0], padded_len, 2)
        pair = jnp.arange(padded_len - 1)[None, :] < lengths[:, None] - 1
        unequal = (bits[:, :-1] != bits[:, 1:]) & pair
        return bits, (unequal.sum(axis=1) % 2)[:, None].astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Parity(ClassificationTask):
    name = "parity"
    vocab_size = 2

    def generate(self, key, lengths, padded_len):
        bits = uniform_tokens(key, lengths.shape[0], padded_len, 2)
        inside = jnp.arange(padded_len)[None, :] < lengths[:, None]
        return bits, (jnp.where(inside, bits, 0).sum(axis=1) % 2)[:, None].astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class CycleNavigation(ClassificationTask):
    name = "cycle_navigation"
    vocab_size = 3  # left, stay, right
    cycle_length: int = 5  # Delétang et al.'s value

    @property
    def num_classes(self) -> int:
        return self.cycle_length

    def validate(self) -> None:
        super().validate()
        require_at_least("task.cycle_length", self.cycle_length, 2)

    def generate(self, key, lengths, padded_len):
        moves = uniform_tokens(key, lengths.shape[0], padded_len, 3)
        inside = jnp.arange(padded_len)[None, :] < lengths[:, None]
        final = jnp.where(inside, moves - 1, 0).sum(axis=1) % self.cycle_length
        return moves, final[:, None].astype(jnp.int32)


PLUS, MINUS, TIMES, BLANK = 0, 1, 2, 3  # operator token = modulus + one of these


@dataclasses.dataclass(frozen=True)
class ModularTask(ClassificationTask):
    """A task whose answer is a residue modulo `modulus`; its tokens start with the residues."""

    modulus: int = 5  # Delétang et al.'s value

    @property
    def num_classes(self) -> int:
        return self.modulus

    def validate(self) -> None:
        super().validate()
        require_at_least("task.modulus", self.modulus, 2)


@dataclasses.dataclass(frozen=True)
class ModularArithmetic(ModularTask):
    name = "modular_arithmetic"

    @property
    def vocab_size(self) -> int:
        return self.modulus + 4  # residues, then +, −, *, _

    def generate(self, key, lengths, padded_len):
        batch = lengths.shape[0]
        residue_key, operator_key = jax.random.split(key)
        residues = uniform_tokens(residue_key, batch, padded_len, self.modulus)
        operators = uniform_tokens(operator_key, batch, padded_len, 3)  # +, −, *
        index = jnp.arange(padded_len)[None, :]
        last_operator_slot = (index == lengths[:, None] - 1) & (index % 2 == 1)
        operators = jnp.where(last_operator_slot, BLANK, operators)
        content = jnp.where(index % 2 == 0, residues, self.modulus + operators)
        return content, evaluate_modular(residues, operators, lengths, self.modulus)[:, None]


def evaluate_modular(
    residues: jax.Array, operators: jax.Array, lengths: jax.Array, modulus: int
) -> jax.Array:
    """Value mod `modulus` of r0 o1 r2 o3 r4 … (residues at even, operators at odd slots).

    Left to right, keeping (sum of finished terms, current product): * multiplies the product;
    + and − finish it and start a new one from ±r. Slots past the length, and everything from
    a blank on, change nothing. [batch, padded_len] -> [batch] int32."""
    terms = (lengths + 1) // 2  # residues present (a trailing blank ends the expression)

    def step(carry, k):
        total, product = carry
        residue, operator = residues[:, 2 * k], operators[:, 2 * k - 1]
        multiply = operator == TIMES
        sign = jnp.where(operator == MINUS, -1, 1)
        new_total = jnp.where(multiply, total, total + product)
        new_product = jnp.where(multiply, product * residue, sign * residue)
        active = k < terms
        return (
            jnp.where(active, new_total, total) % modulus,
            jnp.where(active, new_product, product) % modulus,
        ), None

    first = residues[:, 0]
    # k runs over the residue slots 2k <= padded_len - 1, so every read is in range.
    later_residues = jnp.arange(1, (residues.shape[1] + 1) // 2)
    (total, product), _ = jax.lax.scan(step, (jnp.zeros_like(first), first), later_residues)
    return ((total + product) % modulus).astype(jnp.int32)
