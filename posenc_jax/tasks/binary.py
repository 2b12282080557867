"""Binary arithmetic tasks of the Chomsky-hierarchy suite (Delétang et al. 2023, ICLR; Table 1),
as in google-deepmind/neural_networks_chomsky_hierarchy, with jittable samplers.

    binary_addition:        a + b, both little-endian (least significant bit first); answer
                            the sum, little-endian, without high zeros, then a terminator `$`,
                            then 0s up to n + 1 answer slots.
                            001+01101 (4 + 22) -> 01011 $ 000  (26)
    binary_multiplication:  a * b, the same format, n answer slots.
                            001*01101 (4 * 22) -> 0001101 $ 0  (88)

An input of length n splits as in the reference: the first operand has a length uniform on
[1, n − 2], the second the rest; each operand is uniform on [1, 2^len − 1] (leading zeros
allowed, value never 0). As in the reference, answer slots after the terminator are padding
and not scored. Shortest input: 3 (two one-bit operands and the operator).
"""

from __future__ import annotations

import abc
import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.tasks.base import TaskSpec, uniform_tokens

OPERATOR = 2  # the `+` or `*` between the operands
TERMINATOR = 2  # ends the result in the answer
_DRAWS = 16  # candidate bit strings per operand, for a nonzero value (see `_operands`)


def _operands(key: jax.Array, lengths: jax.Array, max_len: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The two operands as little-endian bit rows [B, max_len] (zero past their length), and
    the first one's length [B].

    A value uniform on [1, 2^len − 1] is a uniform bit string that is not all zeros: the first
    nonzero of 16 independent draws. If all 16 are zero (probability 2^-16 for one bit, where
    the only nonzero value is 1, and <= 2^-32 from two bits on) the value is 1."""
    batch = lengths.shape[0]
    split_key, *draw_keys = jax.random.split(key, 3)
    first_len = jax.random.randint(split_key, (batch,), 1, lengths - 1)  # uniform on [1, n − 2]
    index = jnp.arange(max_len)[None, :]

    def nonzero(draw_key, length):
        inside = index < length[:, None]
        draws = jnp.stack([uniform_tokens(jax.random.fold_in(draw_key, r), batch, max_len, 2)
                           for r in range(_DRAWS)], axis=1) * inside[:, None]  # [B, draws, max_len]
        found = draws.any(axis=2)
        first = jnp.argmax(found, axis=1)
        chosen = jnp.take_along_axis(draws, first[:, None, None], axis=1)[:, 0]
        one = (index == 0).astype(chosen.dtype)
        return jnp.where(found.any(axis=1)[:, None], chosen, one)

    return nonzero(draw_keys[0], first_len), nonzero(draw_keys[1], lengths - 1 - first_len), first_len


def _expression(a: jax.Array, b: jax.Array, first_len: jax.Array) -> jax.Array:
    """a OPERATOR b laid out in one row: [B, max_len]."""
    index = jnp.arange(a.shape[1])[None, :]
    start = first_len[:, None] + 1
    b_here = jnp.take_along_axis(b, jnp.clip(index - start, 0, b.shape[1] - 1), axis=1)
    return jnp.where(index < first_len[:, None], a, jnp.where(index == first_len[:, None], OPERATOR, b_here))


def _propagate_carries(columns: jax.Array) -> jax.Array:
    """Little-endian bits of Σ_k columns[k]·2^k for nonnegative integer columns [B, W] -> [B, W]."""
    def step(carry, column):
        total = column + carry
        return total // 2, total % 2
    _, bits = jax.lax.scan(step, jnp.zeros_like(columns[:, 0]), columns.T)
    return bits.T


def _terminated(bits: jax.Array, num_answers: int) -> jax.Array:
    """bits without high zeros, then TERMINATOR, then 0s: [B, num_answers]."""
    index = jnp.arange(bits.shape[1])[None, :]
    significant = jnp.max(jnp.where(bits > 0, index + 1, 0), axis=1, keepdims=True)
    slot = jnp.arange(num_answers)[None, :]
    body = jnp.take_along_axis(bits, jnp.clip(slot, 0, bits.shape[1] - 1), axis=1)
    return jnp.where(slot < significant, body, jnp.where(slot == significant, TERMINATOR, 0)).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class _BinaryOperation(TaskSpec):
    min_len = 3
    vocab_size = 3  # 0, 1, the operator

    train_min_len: int = 3

    def scored(self, answers):
        terminator_at = jnp.argmax(answers == TERMINATOR, axis=1)[:, None]
        return jnp.arange(answers.shape[1])[None, :] <= terminator_at

    def generate(self, key, lengths, max_len):
        a, b, first_len = _operands(key, lengths, max_len)
        return _expression(a, b, first_len), _terminated(self.result_bits(a, b), self.answer_len(max_len))

    @abc.abstractmethod
    def result_bits(self, a: jax.Array, b: jax.Array) -> jax.Array:
        """Little-endian bits of the result of operands a, b [B, max_len] -> [B, width]."""


@dataclasses.dataclass(frozen=True)
class BinaryAddition(_BinaryOperation):
    name = "binary_addition"

    def answer_len(self, n):
        return n + 1

    def result_bits(self, a, b):
        return _propagate_carries(jnp.pad(a + b, ((0, 0), (0, 1))))


@dataclasses.dataclass(frozen=True)
class BinaryMultiplication(_BinaryOperation):
    name = "binary_multiplication"

    def result_bits(self, a, b):
        # Column k of the long multiplication: Σ_i a_i · b_(k−i).
        columns = jax.vmap(lambda x, y: jnp.convolve(x, y, mode="full"))(a, b)
        return _propagate_carries(columns)
