"""Arithmetic tasks with jittable samplers: the binary ones of the Chomsky-hierarchy suite
(Delétang et al. 2023, ICLR; Table 1, as in google-deepmind/neural_networks_chomsky_hierarchy)
and decimal addition in both digit orders (Kazemnejad et al. 2023, "The Impact of Positional
Encoding on Length Generalization in Transformers").

    binary_addition:        a + b, both little-endian (least significant bit first); answer
                            the sum, little-endian, without high zeros, then a terminator `$`,
                            then 0s up to n + 1 answer slots.
                            001+01101 (4 + 22) -> 01011 $ 000  (26)
    binary_multiplication:  a * b, the same format, n answer slots.
                            001*01101 (4 * 22) -> 0001101 $ 0  (88)
    compute_sqrt:           floor(sqrt(x)) of a big-endian x, big-endian in ceil(n/2) bits.
                            100101 (37) -> 110 (6)
    addition:               a + b in decimal, operands and sum in the same digit order:
                            `digit_order=msd` (most significant first) 47+385 -> 432 $;
                            `digit_order=lsd` (least significant first) 74+583 -> 234 $.

For the binary operations, an input of length n splits as in the reference: the first operand has a
length uniform on [1, n − 2], the second the rest; each operand is uniform on [1, 2^len − 1]
(leading zeros allowed, value never 0). As in the reference, answer slots after the terminator are
padding and not scored. Shortest input: 3 (two one-bit operands and the operator).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from posenc_jax.spec import choice
from posenc_jax.tasks.base import (
    NUM_SPECIAL,
    Batch,
    DigitRoles,
    NumberTask,
    TaskSpec,
    TerminatedTask,
    gather_columns,
    reversed_prefix,
    uniform_tokens,
)

OPERATOR = 2  # the `+` or `*` between the operands
_DRAWS = 16  # candidate bit strings per operand, for a nonzero value (see `_operands`)


def _nonzero_bits(key: jax.Array, lengths: jax.Array, padded_len: int) -> jax.Array:
    """Bit rows [B, padded_len], uniform over the nonzero strings of each row's length (zero past
    it).

    The first nonzero of 16 independent uniform draws; if all 16 are zero (probability 2^-16
    for one bit, where the only nonzero string is 1, and <= 2^-32 from two bits on), the
    string 1 (lowest bit set). Columns are drawn one by one, so rows do not depend on padded_len."""
    batch = lengths.shape[0]
    index = jnp.arange(padded_len)[None, :]
    inside = index < lengths[:, None]
    draws = (
        jnp.stack(
            [
                uniform_tokens(jax.random.fold_in(key, r), batch, padded_len, 2)
                for r in range(_DRAWS)
            ],
            axis=1,
        )
        * inside[:, None]
    )  # [B, draws, padded_len]
    found = draws.any(axis=2)
    chosen = jnp.take_along_axis(draws, jnp.argmax(found, axis=1)[:, None, None], axis=1)[:, 0]
    return jnp.where(found.any(axis=1)[:, None], chosen, (index == 0).astype(chosen.dtype))


def _operands(key: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Operand lengths as in the reference: the first uniform on [1, n − 2], the second
    n − 1 − it."""
    first_len = jax.random.randint(key, lengths.shape, 1, lengths - 1)
    return first_len, lengths - 1 - first_len


def _expression(
    a: jax.Array, b: jax.Array, first_len: jax.Array, operator: int = OPERATOR
) -> jax.Array:
    """a, the operator, b laid out in one row: [B, padded_len]."""
    index = jnp.arange(a.shape[1])[None, :]
    start = first_len[:, None] + 1
    b_here = gather_columns(b, index - start)
    return jnp.where(
        index < first_len[:, None], a, jnp.where(index == first_len[:, None], operator, b_here)
    )


class TwoOperandDigits(NumberTask):
    """`a op b -> result` with every number least significant digit first: the digit roles
    (`DigitRoles`) that Abacus and position coupling place positions by. `operator` is the
    content token between the operands."""

    operator: ClassVar[int]

    def digit_roles(self, batch, causal):
        return two_operand_roles(batch, self.operator + NUM_SPECIAL, causal)

    def largest_place(self, n: int, causal: bool) -> int:
        # An operand has at most n − 2 digits; answer slot j stands for place j (encoder) or
        # holds place j − 1 (decoder), over answer_len(n) slots.
        return max(n - 3, self.answer_len(n) - (2 if causal else 1))


def two_operand_roles(batch: Batch, operator_id: int, causal: bool) -> DigitRoles:
    """`DigitRoles` of `a op b -> result` with every number least significant digit first:
    the first operand's slot s has place s, the second's counts from the slot after the
    operator, and the answer slots follow `DigitRoles`' rule."""
    slot = jnp.arange(batch.inputs.shape[1])[None, :]
    n = batch.lengths[:, None]
    operator_at = jnp.argmax((batch.inputs == operator_id) & (slot < n), axis=1)[:, None]
    answer_index = slot - n
    result_place = answer_index - 1 if causal else answer_index
    significance = jnp.where(
        slot < operator_at,
        slot,
        jnp.where(slot < n, slot - operator_at - 1, jnp.where(batch.token_mask, result_place, -1)),
    )
    separator = (slot == operator_at) | (causal & (answer_index == 0))
    significance = jnp.where(separator | ~batch.token_mask, -1, significance)
    return DigitRoles(significance.astype(jnp.int32), separator & batch.token_mask)


def _propagate_carries(columns: jax.Array, base: int = 2) -> jax.Array:
    """Little-endian digits of Σ_k columns[k]·base^k, for nonnegative integer columns:
    [B, W] -> [B, W]."""

    def step(carry, column):
        total = column + carry
        return total // base, total % base

    _, digits = jax.lax.scan(step, jnp.zeros_like(columns[:, 0]), columns.T)
    return digits.T


def _significant_length(digits: jax.Array) -> jax.Array:
    """Number of digits up to the highest nonzero one (0 for zero): [B, W] -> [B]."""
    return jnp.max(jnp.where(digits > 0, jnp.arange(digits.shape[1])[None, :] + 1, 0), axis=1)


@dataclasses.dataclass(frozen=True)
class _BinaryOperation(TerminatedTask):
    min_input_len = 3
    vocab_size = 3  # 0, 1, the operator

    train_min_len: int = 3

    def generate(self, key, lengths, padded_len):
        split_key, a_key, b_key = jax.random.split(key, 3)
        first_len, second_len = _operands(split_key, lengths)
        a, b = (
            _nonzero_bits(a_key, first_len, padded_len),
            _nonzero_bits(b_key, second_len, padded_len),
        )
        result = self.result_bits(a, b)
        answers = self.terminated(result, _significant_length(result), self.answer_len(padded_len))
        return _expression(a, b, first_len), answers

    @abc.abstractmethod
    def result_bits(self, a: jax.Array, b: jax.Array) -> jax.Array:
        """Little-endian bits of the result of operands a, b [B, padded_len] -> [B, width]."""


@dataclasses.dataclass(frozen=True)
class BinaryAddition(_BinaryOperation, TwoOperandDigits):
    name = "binary_addition"
    operator = OPERATOR

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


@dataclasses.dataclass(frozen=True)
class ComputeSqrt(TaskSpec):
    """floor(sqrt(x)) of a big-endian binary number x uniform on [1, 2^n − 1] (n bits, leading
    zeros allowed), answered big-endian in ceil(n/2) bits: 100101 (37) -> 110 (6)."""

    name = "compute_sqrt"
    vocab_size = 2

    def answer_len(self, n):
        return (n + 1) // 2

    def generate(self, key, lengths, padded_len):
        little = _nonzero_bits(key, lengths, padded_len)  # x, least significant bit first
        index = jnp.arange(padded_len)[None, :]
        content = jnp.where(index < lengths[:, None], reversed_prefix(little, lengths), 0)
        root = integer_sqrt(little, self.answer_len(padded_len))  # little-endian
        return content, reversed_prefix(root, self.answer_len(lengths))


def integer_sqrt(x: jax.Array, root_bits: int) -> jax.Array:
    """floor(sqrt(x)) for little-endian bit rows x [B, W] with sqrt(x) < 2^root_bits.

    Bit by bit from the top, keeping the remainder r = x − y²: setting bit k of y adds
    t = y·2^(k+1) + 2^(2k) to y² (y has no bits at k or below yet, so t is y shifted with
    bit 2k set, no addition needed); keep the bit if t <= r. -> [B, root_bits] little-endian."""
    batch, width = x.shape
    width = max(width, 2 * root_bits + 1)
    x = jnp.pad(x, ((0, 0), (0, width - x.shape[1])))
    index = jnp.arange(width)[None, :]

    def step(state, k):
        remainder, root = state
        shifted = gather_columns(root, index - (k + 1))
        trial = jnp.where(index >= k + 1, shifted, 0) | (index == 2 * k)
        keep = ~_greater(trial, remainder)
        remainder = jnp.where(keep[:, None], _subtract(remainder, trial), remainder)
        root = jnp.where(keep[:, None] & (index == k), 1, root)
        return (remainder, root), None

    root = jnp.zeros_like(x)
    (_, root), _ = jax.lax.scan(step, (x, root), jnp.arange(root_bits - 1, -1, -1))
    return root[:, :root_bits]


def _greater(a: jax.Array, b: jax.Array) -> jax.Array:
    """a > b for little-endian bit rows [B, W] -> [B] bool: decided by the highest differing bit."""
    differ = a != b
    highest = a.shape[1] - 1 - jnp.argmax(differ[:, ::-1], axis=1)
    return differ.any(axis=1) & (jnp.take_along_axis(a, highest[:, None], axis=1)[:, 0] == 1)


def _subtract(a: jax.Array, b: jax.Array) -> jax.Array:
    """a − b for little-endian bit rows with a >= b, rippling the borrow from the low end."""

    def step(borrow, bits):
        difference = bits[0] - bits[1] - borrow
        return (difference < 0).astype(difference.dtype), difference % 2

    _, out = jax.lax.scan(step, jnp.zeros_like(a[:, 0]), jnp.stack([a.T, b.T], axis=1))
    return out.T


DIGIT_ORDERS = ("msd", "lsd")
PLUS = 10  # the + between decimal operands, after the ten digits


@dataclasses.dataclass(frozen=True)
class Addition(TerminatedTask, TwoOperandDigits):
    """Decimal a + b; the first operand has a length uniform on [1, n − 2], the second the rest,
    every digit uniform (leading zeros allowed). The answer is the sum without leading zeros in
    the operands' digit order, then a terminator (at most n − 1 digits and the terminator fill
    the n answer slots; any slots after the terminator are padding)."""

    name = "addition"
    operator = PLUS
    min_input_len = 3
    vocab_size = 11  # ten digits, then +
    terminator = 10
    train_min_len: int = 3
    digit_order: str = choice("msd", DIGIT_ORDERS)

    @property
    def num_outputs(self) -> int:
        return 11  # ten digits and the terminator

    def why_no_digit_roles(self):
        if self.digit_order == "lsd":
            return None
        return (
            "with task.digit_order=msd a sum's first digit has a place that depends on the "
            "sum's length, so its position would give away part of the answer (Abacus and "
            "position coupling reverse the numbers for this reason); use task.digit_order=lsd"
        )

    def generate(self, key, lengths, padded_len):
        batch = lengths.shape[0]
        split_key, a_key, b_key = jax.random.split(key, 3)
        first_len, second_len = _operands(split_key, lengths)
        index = jnp.arange(padded_len)[None, :]
        # Little-endian digits (zero past each operand's length) for the arithmetic.
        a = uniform_tokens(a_key, batch, padded_len, 10) * (index < first_len[:, None])
        b = uniform_tokens(b_key, batch, padded_len, 10) * (index < second_len[:, None])
        total = _propagate_carries(jnp.pad(a + b, ((0, 0), (0, 1))), base=10)
        digits = jnp.maximum(_significant_length(total), 1)  # 0 is written "0"
        if self.digit_order == "msd":
            a, b, total = (
                reversed_prefix(x, n) for x, n in ((a, first_len), (b, second_len), (total, digits))
            )
        content = _expression(a, b, first_len, operator=PLUS)
        return content, self.terminated(total, digits, self.answer_len(padded_len))
