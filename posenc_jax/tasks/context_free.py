"""Deterministic context-free tasks of the Chomsky-hierarchy suite (Delétang et al. 2023, ICLR;
Table 1), as in google-deepmind/neural_networks_chomsky_hierarchy, with jittable samplers.

    stack_manipulation:  a stack of bits given bottom to top, then actions POP, PUSH 0, PUSH 1;
                         answer the final stack top to bottom, a terminator, then 0s up to
                         n + 1 answer slots (popping an empty stack does nothing).
                         0 1 1 0 PUSH1 POP POP -> 1 1 0 $ 0 0 0 0

An input of length n >= 2 holds a stack of length uniform on [1, n − 1] and n − that many
actions, as in the reference; an input of length 1 is a one-bit stack.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.tasks.base import TerminatedTask, uniform_tokens

POP, PUSH_0, PUSH_1 = 2, 3, 4


@dataclasses.dataclass(frozen=True)
class StackManipulation(TerminatedTask):
    name = "stack_manipulation"
    vocab_size = 5  # bits 0, 1, then POP, PUSH 0, PUSH 1

    def answer_len(self, n):
        return n + 1

    def generate(self, key, lengths, max_len):
        batch = lengths.shape[0]
        split_key, bit_key, action_key = jax.random.split(key, 3)
        stack_len = jax.random.randint(split_key, (batch,), 1, jnp.maximum(lengths, 2))  # [1, n − 1]
        index = jnp.arange(max_len)[None, :]
        bits = uniform_tokens(bit_key, batch, max_len, 2)
        actions = POP + uniform_tokens(action_key, batch, max_len, 3)
        content = jnp.where(index < stack_len[:, None], bits, actions)
        stack, size = run_stack(content, stack_len, lengths)
        top_first = jnp.take_along_axis(stack, jnp.clip(size[:, None] - 1 - index, 0, max_len - 1), axis=1)
        return content, self.terminated(top_first, size, self.answer_len(max_len))


def run_stack(content: jax.Array, stack_len: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Push the first stack_len tokens, then apply the actions up to the length.

    -> the stack bottom first [B, max_len] (entries at and above `size` are stale) and its size [B]."""
    batch, max_len = content.shape
    slots = jnp.arange(max_len)[None, :]

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
    (stack, size), _ = jax.lax.scan(step, start, jnp.arange(max_len))
    return stack, size
