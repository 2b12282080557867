"""Abacus embeddings (McLeish, Bansal, Stein, Jain, Kirchenbauer, Bartoldson, Kailkhura,
Bhatele, Geiping, Schwarzschild & Goldstein 2024, "Transformers Can Do Arithmetic with the Right
Embeddings", NeurIPS), as in the official code (mcleish7/arithmetic,
cramming/architectures/embeddings.py, class Abacus).

Each digit's position id is its place within its own number, counted from 1; every other token
gets 0. A learned table row per id is added to the token embeddings. In training, one random
offset k, uniform on {0, …, max_offset}, is added to every digit's id of the batch (the official
`random.randint(0, max_k)` per forward pass, max_abacus_len = 100), so the rows for long numbers
are trained on short ones; evaluation uses k = 0:

    id = significance + 1 + k   for digits,    0 otherwise
    x[b, t] += table[id[b, t]]

The official code numbers each run of digits from its left end, on numbers written least
significant digit first ("integers must be reversed for this to work"); on the tasks that give
digit roles here (`binary_addition`, `addition` with digit_order=lsd) that is the significance
+ 1. Answer slots take their role from the slot (see `tasks.base.DigitRoles`). The table has
`table_size` rows (the official max_seq_length, 512), initialised N(0, 1/d_model) as the
official `deepnorm-straight` init. Attention itself gets no position encoding (the official
default, NoPE). An id past the table fills NaN rather than clamping (see `learned.py`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import DigitPositions, PositionalEncoding, require_table_size
from posenc_jax.encodings.learned import LearnedEncoding
from posenc_jax.errors import ConfigError, require_at_least
from posenc_jax.tasks.base import DigitRoles


def abacus_ids(roles: DigitRoles, offset: jax.Array | int) -> jax.Array:
    """significance + 1 + offset on digit slots, 0 elsewhere: [batch, T] int32."""
    return jnp.where(roles.significance >= 0, roles.significance + 1 + offset, 0).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Abacus(DigitPositions):
    name = "abacus"
    table_size: int = 512  # the official max_seq_length
    max_offset: int = 100  # the official max_abacus_len: k is uniform on 0 .. max_offset

    @property
    def num_positions(self) -> int:
        return self.table_size

    def largest_id(self, largest_place, training):
        return largest_place + 1 + (self.max_offset if training else 0)

    def validate(self, model) -> None:
        super().validate(model)
        require_at_least("encoding.max_offset", self.max_offset, 0)
        require_table_size(self.table_size)
        if self.table_size < self.max_offset + 2:
            raise ConfigError(
                f"encoding.table_size={self.table_size} must be at least encoding.max_offset + 2 "
                f"= {self.max_offset + 2}: a one-digit number's id reaches 1 + max_offset in "
                f"training, and row 0 is every other token's."
            )

    def positions_from_roles(self, roles, key, training):
        offset = jax.random.randint(key, (), 0, self.max_offset + 1) if training else 0
        return abacus_ids(roles, offset)

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return LearnedEncoding(self.table_size, model.d_model, model.d_model**-0.5, rngs)
