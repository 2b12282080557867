"""copy and reverse: output the input unchanged, or reversed (Delétang et al. 2023 list
reverse_string among the context-free tasks; copy is its order-preserving twin).

    copy:    [3, 1, 4] -> [3, 1, 4]
    reverse: [3, 1, 4] -> [4, 1, 3]

Tokens are drawn uniformly from the vocabulary (repeats allowed); one answer per input token.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from posenc_jax.tasks.base import TaskSpec, uniform_tokens


@dataclasses.dataclass(frozen=True)
class Copy(TaskSpec):
    name = "copy"
    vocab_size: int = 16

    def generate(self, key, lengths, padded_len):
        content = uniform_tokens(key, lengths.shape[0], padded_len, self.vocab_size)
        return content, content


@dataclasses.dataclass(frozen=True)
class Reverse(TaskSpec):
    name = "reverse"
    vocab_size: int = 16

    def generate(self, key, lengths, padded_len):
        content = uniform_tokens(key, lengths.shape[0], padded_len, self.vocab_size)
        # answer j is content[n-1-j]; the clip only affects j >= n, which the layout masks out.
        source = jnp.clip(lengths[:, None] - 1 - jnp.arange(padded_len)[None, :], 0, padded_len - 1)
        return content, jnp.take_along_axis(content, source, axis=1)
