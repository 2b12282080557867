"""sort: sort a list of multi-token numbers (the multi-digit sort of Kazemnejad et al. 2023,
"The Impact of Positional Encoding on Length Generalization in Transformers").

Each number has `digits` decimal digits (leading zeros allowed), written most significant
digit first with no separator; the answer is the same numbers in ascending order, digit by
digit. An input of length n holds ⌊n / digits⌋ numbers, after n mod digits leading filler
tokens.  digits = 2:  53 07 41 -> 07 41 53;   n = 7:  _ 53 07 41 -> 07 41 53.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from posenc_jax.errors import ConfigError
from posenc_jax.tasks.base import TaskSpec, gather_columns, uniform_tokens

FILLER = 10


@dataclasses.dataclass(frozen=True)
class Sort(TaskSpec):
    name = "sort"
    vocab_size = 11  # ten digits, then the filler
    train_min_len: int = 2  # one number of the default two digits
    digits: int = 2

    @property
    def min_input_len(self) -> int:
        return self.digits  # one number

    @property
    def num_outputs(self) -> int:
        return 10

    def answer_len(self, n):
        return n // self.digits * self.digits

    def validate(self) -> None:
        if not 1 <= self.digits <= 9:
            raise ConfigError(f"task.digits={self.digits} must be between 1 and 9.")
        super().validate()

    def generate(self, key, lengths, padded_len):
        batch = lengths.shape[0]
        k = self.digits
        count = lengths // k
        numbers = uniform_tokens(key, batch, padded_len, 10**k)  # number j: column j
        index = jnp.arange(padded_len)[None, :]
        # Past the count, numbers sort last (10^k) and only fill unscored slots.
        ordered = jnp.sort(jnp.where(index < count[:, None], numbers, 10**k), axis=1)
        fill = (lengths % k)[:, None]

        def digit_at(values, start):
            """The digit at each slot when numbers are laid out from slot `start` on."""
            offset = index - start
            number = gather_columns(values, offset // k)
            return number // 10 ** (k - 1 - offset % k) % 10

        content = jnp.where(index < fill, FILLER, digit_at(numbers, fill))
        answers = digit_at(ordered, 0)
        return content.astype(jnp.int32), answers[:, : self.answer_len(padded_len)].astype(
            jnp.int32
        )
