"""Position coupling (Cho, Cha, Lee, Yun, Chang & Kim 2024, "Position Coupling: Improving Length
Generalization of Arithmetic Transformers Using Task Structure", NeurIPS), as in the official
code (HanseulJo/position-coupling, src/data/addition.py,
`AdditionDatasetWithCoupledPositions`, and the model's learned position table).

Tokens that play the same role share a position id: the digits of the same place value in both
operands and in the result, and the separators between numbers. Every example draws a start s,
uniform on {1, …, max_position − 1 − P} in training, where P is its highest place value (the
official `randint(1, max_position − len(labels) + 1)`), and s = 1 in evaluation (the official
`randomize: False`):

    id = s + 1 + significance   for digits
    id = s                      for separators (the operator, the decoder's answer marker)
    id = 0                      for every other slot
    x[b, t] += table[id[b, t]],   table: [max_position + 1, d_model], N(0, 1) (the official
                                  `wpe` init, initializer_factor 1)

Example, 57+1234 (one start s, most significant first as the official input): 5 7 + 1 2 3 4
-> s+2 s+1 s s+4 s+3 s+2 s+1. The official format zero-pads the operands to one length and
writes the answer reversed; here the tasks' own layout is kept (`tasks.base.DigitRoles` gives
each slot's place), and answer slots take their role from the slot. Attention itself gets no
position encoding (the official `abs_learned` setting). An id past the table fills NaN rather
than clamping (see `learned.py`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import DigitPositions, PositionalEncoding
from posenc_jax.encodings.learned import LearnedEncoding
from posenc_jax.tasks.base import DigitRoles

INIT_STD = 1.0  # the official wpe init: normal(0, initializer_factor · 1.0)


def coupled_ids(roles: DigitRoles, start: jax.Array | int) -> jax.Array:
    """start + 1 + significance on digits, start on separators, 0 elsewhere; `start` is an int
    or one per example [batch]: [batch, T] int32."""
    start = jnp.reshape(jnp.asarray(start), (-1, 1))
    ids = jnp.where(roles.separator, start, 0)
    return jnp.where(roles.significance >= 0, start + 1 + roles.significance, ids).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Coupled(DigitPositions):
    name = "coupled"
    max_position: int = 150  # the largest id (the official run script's maxpos)

    @property
    def num_positions(self) -> int:
        return self.max_position + 1  # ids 0 .. max_position

    def largest_id(self, largest_place, training):
        # At s = 1 in evaluation; training's random start keeps every id within max_position
        # once this fits, since s <= max_position − 1 − the example's largest place.
        return largest_place + 2

    def positions_from_roles(self, roles, key, training):
        if not training:
            return coupled_ids(roles, 1)
        highest = roles.significance.max(axis=1)
        start = jax.random.randint(key, highest.shape, 1, self.max_position - highest)
        return coupled_ids(roles, start)

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return LearnedEncoding(self.max_position + 1, model.d_model, INIT_STD, rngs)
