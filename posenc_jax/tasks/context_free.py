"""Deterministic context-free tasks of the Chomsky-hierarchy suite (Delétang et al. 2023, ICLR;
Table 1), as in google-deepmind/neural_networks_chomsky_hierarchy, with jittable samplers.

    stack_manipulation:  a stack of bits given bottom to top, then actions POP, PUSH 0, PUSH 1;
                         answer the final stack top to bottom, a terminator, then 0s up to
                         n + 1 answer slots (popping an empty stack does nothing).
                         0 1 1 0 PUSH1 POP POP -> 1 1 0 $ 0 0 0 0

    modular_arithmetic_brackets:  a bracketed expression of residues, + and −; answer its
                         value mod 5.  ((2−3)+(−4)) -> 0
    solve_equation:      the same with one residue replaced by x, then = and the value;
                         answer x.  ((2−x)+(−4)) = 0 -> 3

For stack_manipulation, an input of length n >= 2 holds a stack of length uniform on [1, n − 1] and
n − that many actions, as in the reference; an input of length 1 is a one-bit stack.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.tasks.base import TerminatedTask, reversed_prefix, uniform_tokens
from posenc_jax.tasks.regular import ModularTask

POP, PUSH_0, PUSH_1 = 2, 3, 4


@dataclasses.dataclass(frozen=True)
class StackManipulation(TerminatedTask):
    name = "stack_manipulation"
    vocab_size = 5  # bits 0, 1, then POP, PUSH 0, PUSH 1

    def answer_len(self, n):
        return n + 1

    def generate(self, key, lengths, padded_len):
        batch = lengths.shape[0]
        split_key, bit_key, action_key = jax.random.split(key, 3)
        stack_len = jax.random.randint(
            split_key, (batch,), 1, jnp.maximum(lengths, 2)
        )  # [1, n − 1]
        index = jnp.arange(padded_len)[None, :]
        bits = uniform_tokens(bit_key, batch, padded_len, 2)
        actions = POP + uniform_tokens(action_key, batch, padded_len, 3)
        content = jnp.where(index < stack_len[:, None], bits, actions)
        stack, size = run_stack(content, stack_len, lengths)
        top_first = reversed_prefix(stack, size)
        return content, self.terminated(top_first, size, self.answer_len(padded_len))


def run_stack(
    content: jax.Array, stack_len: jax.Array, lengths: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Push the first stack_len tokens, then apply the actions up to the length.

    -> the stack bottom first [B, padded_len] (entries at and above `size` are stale) and its
    size [B]."""
    batch, padded_len = content.shape
    slots = jnp.arange(padded_len)[None, :]

    def step(state, i):
        stack, size = state
        token = content[:, i]
        push = (i < stack_len) | ((i < lengths) & (token != POP))
        pop = (i >= stack_len) & (i < lengths) & (token == POP)
        value = jnp.where(i < stack_len, token, token - PUSH_0)
        stack = jnp.where(push[:, None] & (slots == size[:, None]), value[:, None], stack)
        size = size + push - (pop & (size > 0))
        return (stack, size), None

    start = (jnp.zeros_like(content), jnp.zeros((batch,), jnp.int32))
    (stack, size), _ = jax.lax.scan(step, start, jnp.arange(padded_len))
    return stack, size


@dataclasses.dataclass(frozen=True)
class ModularArithmeticBrackets(ModularTask):
    """The value mod 5 of a bracketed expression of residues, + and − (Delétang et al.'s
    modular_arithmetic_brackets, `mult=False` as in the paper), grammar as in the reference:

        E(1) = d    E(2) = −d    E(3) = (d)    E(4) = (−d)
        E(L >= 5) = ( E(l) op E(L − 3 − l) ),  l uniform on [1, L − 4],  op uniform on {+, −}

    ((2−3)+(−4)) -> 0."""

    name = "modular_arithmetic_brackets"
    multiplication: bool = False  # the reference's `mult`; the paper uses + and − only

    @property
    def vocab_size(self) -> int:
        return self.modulus + 5  # residues, then + − * ( )

    def generate(self, key, lengths, padded_len):
        content = bracket_expressions(key, lengths, padded_len, self.modulus, self.multiplication)
        return content, evaluate_brackets(content, lengths, self.modulus)[:, None]


def bracket_expressions(key, lengths, padded_len, modulus, multiplication):
    """Expressions of exactly n tokens from the grammar above, written one token per step.

    A stack holds what is still to be written: a token (>= 0) or an expression of length L
    (stored as −L). Each step pops one item and writes one token; an expression writes its
    first token and pushes the rest, last part first, so the stack never holds more items than
    tokens remain. Draws of step t come from fold_in(key, t), so an example does not depend on
    padded_len. [B, padded_len] int32."""
    plus, minus, _, open_, close = (modulus + i for i in range(5))
    batch = lengths.shape[0]
    depth = jnp.arange(padded_len + 1)[None, :]

    def step(state, t):
        stack, size = state
        digit_key, op_key, split_key = jax.random.split(jax.random.fold_in(key, t), 3)
        digit = jax.random.randint(digit_key, (batch,), 0, modulus)
        op = plus + jax.random.randint(op_key, (batch,), 0, 3 if multiplication else 2)
        item = jnp.take_along_axis(stack, jnp.maximum(size - 1, 0)[:, None], axis=1)[:, 0]
        length = jnp.where(item < 0, -item, 0)  # 0 for a token
        left = jax.random.randint(split_key, (batch,), 1, jnp.maximum(length - 3, 2))  # [1, L − 4]
        token = jnp.where(
            item >= 0, item, jnp.where(length == 1, digit, jnp.where(length == 2, minus, open_))
        )
        # The rest, in push order:  L=2: d   L=3: ) d   L=4: ) d −   L>=5: ) E(L−3−l) op E(l)
        count = jnp.where(length >= 5, 4, jnp.maximum(length - 1, 0))
        parts = (
            jnp.where(length == 2, digit, close),
            jnp.where(length >= 5, -(length - 3 - left), digit),
            jnp.where(length >= 5, op, minus),
            -left,
        )
        active = t < lengths
        base = size - 1
        for j, part in enumerate(parts):
            write = active & (j < count)
            stack = jnp.where(write[:, None] & (depth == (base + j)[:, None]), part[:, None], stack)
        size = jnp.where(active, base + count, size)
        return (stack, size), jnp.where(active, token, 0)

    stack = jnp.where(depth == 0, -lengths[:, None], 0)
    _, tokens = jax.lax.scan(step, (stack, jnp.ones((batch,), jnp.int32)), jnp.arange(padded_len))
    return tokens.T.astype(jnp.int32)


def evaluate_brackets(tokens: jax.Array, lengths: jax.Array, modulus: int) -> jax.Array:
    """Value mod `modulus` of expressions from `bracket_expressions`: [B, padded_len] -> [B] int32.

    Left to right with a stack of values and a stack of open brackets and operators. A − is
    unary when it starts the expression or follows ( or an operator; a digit pushes its value
    (negated after a unary −); ) applies the operator above its bracket, if any, to the two
    values on top, then drops the bracket."""
    plus, minus, times, open_, close = (modulus + i for i in range(5))
    batch, padded_len = tokens.shape
    depth = jnp.arange(padded_len + 1)[None, :]

    def top(stack, size, below=0):
        return jnp.take_along_axis(stack, jnp.maximum(size - 1 - below, 0)[:, None], axis=1)[:, 0]

    def put(stack, size, value, where):
        return jnp.where(where[:, None] & (depth == size[:, None]), value[:, None], stack)

    def step(state, t):
        values, n_values, marks, n_marks, negate, previous = state
        token = tokens[:, t]
        active = t < lengths
        is_digit = active & (token < modulus)
        unary = (
            active
            & (token == minus)
            & ((previous == -1) | (previous == open_) | ((previous >= plus) & (previous <= times)))
        )
        is_op = active & (token >= plus) & (token <= times) & ~unary
        opens = active & (token == open_)
        closes = active & (token == close)
        # Closing: apply the operator between the two top values if one sits above the bracket.
        op = top(marks, n_marks)
        applies = closes & (op != open_)
        right, left = top(values, n_values), top(values, n_values, 1)
        combined = (
            jnp.where(op == plus, left + right, jnp.where(op == minus, left - right, left * right))
            % modulus
        )
        values = put(values, n_values - 2, combined, applies)
        n_values = n_values - applies
        n_marks = n_marks - applies  # the operator
        n_marks = n_marks - closes  # the bracket
        # Opening brackets and operators go on the mark stack; digits on the value stack.
        marks = put(marks, n_marks, token, opens | is_op)
        n_marks = n_marks + (opens | is_op)
        digit = jnp.where(negate, -token, token) % modulus
        values = put(values, n_values, digit, is_digit)
        n_values = n_values + is_digit
        negate = jnp.where(unary, True, jnp.where(is_digit, False, negate))
        previous = jnp.where(active, token, previous)
        return (values, n_values, marks, n_marks, negate, previous), None

    zeros = jnp.zeros((batch, padded_len + 1), jnp.int32)
    counts = jnp.zeros((batch,), jnp.int32)
    start = (
        zeros,
        counts,
        zeros,
        counts,
        jnp.zeros((batch,), bool),
        jnp.full((batch,), -1, jnp.int32),
    )
    (values, n_values, *_), _ = jax.lax.scan(step, start, jnp.arange(padded_len))
    return top(values, n_values).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class SolveEquation(ModularTask):
    """Solve for x: an expression of n − 2 tokens from the brackets grammar with one residue
    replaced by x, then = and the expression's value mod 5; answer the replaced residue
    (Delétang et al.'s solve_equation; + and − only, so the solution is unique).
    ((2−x)+(−4)) = 0 -> 3. As in the reference, x replaces the first residue at or after a
    uniformly drawn position (cyclically)."""

    name = "solve_equation"
    min_input_len = 3  # a residue, =, the value
    train_min_len: int = 3

    @property
    def vocab_size(self) -> int:
        return self.modulus + 7  # residues, + − * ( ), then x and =

    def generate(self, key, lengths, padded_len):
        expression_key, place_key = jax.random.split(key)
        size = lengths - 2
        expression = bracket_expressions(expression_key, size, padded_len, self.modulus, False)
        value = evaluate_brackets(expression, size, self.modulus)
        index = jnp.arange(padded_len)[None, :]
        is_residue = (expression < self.modulus) & (index < size[:, None])
        start = jax.random.randint(place_key, (lengths.shape[0], 1), 0, size[:, None])
        # The first residue at or after `start`, cyclically: the residue with the smallest
        # cyclic distance from it.
        distance = jnp.where(is_residue, (index - start) % size[:, None], padded_len)
        hidden = jnp.argmin(distance, axis=1)[:, None]
        unknown, equals = self.modulus + 5, self.modulus + 6
        content = jnp.where(index == hidden, unknown, expression)
        content = jnp.where(
            index == size[:, None],
            equals,
            jnp.where(index == size[:, None] + 1, value[:, None], content),
        )
        return content.astype(jnp.int32), jnp.take_along_axis(expression, hidden, axis=1)
