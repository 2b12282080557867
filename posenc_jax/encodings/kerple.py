"""KERPLE (Chi, Fan, Ramadge & Rudnicky 2022, "KERPLE: Kernelized Relative Positional Embedding
for Length Extrapolation", §4), as in the authors' GPT-NeoX code (chijames/KERPLE).

A conditionally positive definite kernel of the distance |i − j| becomes a logit bias, with two
learned positive parameters per head:

    logarithmic:  bias_h(i, j) = −r1_h · log(1 + r2_h · |i − j|)
    power:        bias_h(i, j) = −r1_h · |i − j| ^ r2_h,            0 < r2_h ≤ 2

Positivity is kept as in the authors' code: parameters are clamped to [0.01, ∞) (and the power
exponent to [0.01, 2]) before use and after every optimizer step (`project_parameters`).
Initialisation (authors' code): log — r1 ~ U[0, 2), r2 ~ U[0, 1); power — r1 ~ U[0, 1),
r2 ~ U[0, 2). The decoder only sees j ≤ i; an encoder gets the same kernel of |i − j| on both
sides.

One set of parameters serves every layer, as in the authors' code: gpt2_model.py builds one
ParallelKerpleLog (or ParallelKerplePower) module and passes it to every layer. Parameters:
r1, r2 [1, heads]. `per_layer=True` gives each layer its own, [num_layers, heads] (not the
authors' layout).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding, relative_positions
from posenc_jax.spec import choice

VARIANTS = ("log", "power")
EPS = 1e-2  # the authors' lower bound on both parameters
MAX_POWER = 2.0  # the power kernel is conditionally positive definite only for r2 <= 2


class KernelizedBias(PositionalEncoding):
    def __init__(
        self, num_layers: int, num_heads: int, variant: str, per_layer: bool, rngs: nnx.Rngs
    ):
        self.variant = variant
        self.per_layer = per_layer
        r1_high, r2_high = (2.0, 1.0) if variant == "log" else (1.0, 2.0)
        shape = (num_layers if per_layer else 1, num_heads)
        self.r1 = nnx.Param(jax.random.uniform(rngs.params(), shape, maxval=r1_high))
        self.r2 = nnx.Param(jax.random.uniform(rngs.params(), shape, maxval=r2_high))

    def _clamped(self) -> tuple[jax.Array, jax.Array]:
        r2_max = MAX_POWER if self.variant == "power" else None
        return jnp.clip(self.r1[...], EPS), jnp.clip(self.r2[...], EPS, r2_max)

    def project_parameters(self) -> None:
        self.r1[...], self.r2[...] = self._clamped()

    def logit_bias(self, q_positions, k_positions, layer):
        row = layer if self.per_layer else 0
        r1, r2 = (p[row][None, :, None, None] for p in self._clamped())  # [1, heads, 1, 1]
        distance = jnp.abs(relative_positions(q_positions, k_positions)).astype(jnp.float32)[
            :, None
        ]
        if self.variant == "log":
            return -r1 * jnp.log1p(r2 * distance)
        # |i−j|^r2 through exp/log, with distance 0 handled apart so the gradient stays finite.
        positive = distance > 0
        powered = jnp.exp(r2 * jnp.log(jnp.where(positive, distance, 1.0)))
        return -r1 * jnp.where(positive, powered, 0.0)


@dataclasses.dataclass(frozen=True)
class Kerple(EncodingSpec):
    name = "kerple"
    adds_logit_bias = True
    variant: str = choice("log", VARIANTS)  # the paper's best on language modelling
    per_layer: bool = False  # the authors' code shares one set of parameters across layers

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return KernelizedBias(model.num_layers, model.num_heads, self.variant, self.per_layer, rngs)
