"""FIRE, functional interpolation for relative positions (Li et al. 2023, "Functional
Interpolation for Relative Positions Improves Long Context Transformers", arXiv 2310.04418,
ICLR 2024; §3),
as in the PyTorch reference code of the paper's appendix.

A small MLP f maps a log-transformed relative distance, normalised by the query's position,
to one bias per head:

    bias_h(i, j) = f_h( ψ(i − j) / (ψ(max(p_i, L)) + ε) ),     ψ(x) = log(|c·x| + 1)

- f: Linear(1 → width) → ReLU → Linear(width → heads), width = 32;
- c: learned, initialised to 0.1 (log transform: amplifies differences between close tokens);
- L = |L_scale · 512|: the threshold below which the normaliser is the constant ψ(L), with the
  multiplier L_scale learned from 1 (so short sequences are not over-stretched);
- ε = 1e-6.

Dividing by the query position ("progressive interpolation") maps a decoder query's distances
(keys j <= i, so |i − j| <= i <= max(i, L)) into [0, 1], the range seen in training. In an
encoder, keys to the right reach |i − j| up to T − 1 − i in a sequence of T positions, so the
input exceeds 1 once that is more than max(i, L): for a query past L in the first half of a
sequence longer than 2L. FIRE is relative only while positions stay below L: past it, the
normaliser grows with the query position. An encoder gets the reference code's |c·(i − j)|, a
symmetric bias.

One FIRE MLP per layer. Parameters, stacked over layers: w1, b1 [num_layers, width], w2 [num_layers,
width, heads], b2 [num_layers, heads], c and L_scale [num_layers]; w/b initialised like PyTorch's
nn.Linear, U(±1/sqrt(fan_in)).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding, relative_positions
from posenc_jax.errors import ConfigError, require_at_least, require_positive_finite

EPS = 1e-6


def _torch_linear_init(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    bound = 1.0 / fan_in**0.5
    return jax.random.uniform(key, shape, minval=-bound, maxval=bound)


class FunctionalInterpolation(PositionalEncoding):
    def __init__(
        self,
        num_layers: int,
        num_heads: int,
        width: int,
        init_c: float,
        init_threshold: float,
        rngs: nnx.Rngs,
    ):
        self.init_threshold = init_threshold
        self.w1 = nnx.Param(_torch_linear_init(rngs.params(), (num_layers, width), fan_in=1))
        self.b1 = nnx.Param(_torch_linear_init(rngs.params(), (num_layers, width), fan_in=1))
        self.w2 = nnx.Param(
            _torch_linear_init(rngs.params(), (num_layers, width, num_heads), fan_in=width)
        )
        self.b2 = nnx.Param(
            _torch_linear_init(rngs.params(), (num_layers, num_heads), fan_in=width)
        )
        # An explicit dtype: jnp.full of a Python float is weakly typed, the optimizer's update
        # is not, and the changed type would recompile the training step once more.
        self.c = nnx.Param(jnp.full((num_layers,), init_c, jnp.float32))
        self.threshold_scale = nnx.Param(jnp.ones((num_layers,)))

    def logit_bias(self, q_positions, k_positions, layer):
        c = self.c[layer]

        def psi(x):
            return jnp.log(jnp.abs(c * x) + 1.0)

        threshold = jnp.abs(self.threshold_scale[layer] * self.init_threshold)
        query_position = q_positions.astype(jnp.float32)[:, :, None]  # [batch, q_len, 1]
        distance = -relative_positions(q_positions, k_positions).astype(jnp.float32)  # i − j
        normalised = psi(distance) / (psi(jnp.maximum(query_position, threshold)) + EPS)
        hidden = jax.nn.relu(normalised[..., None] * self.w1[layer] + self.b1[layer])
        return (
            jnp.einsum("bqku,uh->bhqk", hidden, self.w2[layer])
            + self.b2[layer][None, :, None, None]
        )


@dataclasses.dataclass(frozen=True)
class Fire(EncodingSpec):
    name = "fire"
    adds_logit_bias = True
    width: int = 32  # hidden units of the MLP
    init_c: float = 0.1
    init_threshold: float = 512.0  # L before its learned multiplier

    def validate(self, model) -> None:
        super().validate(model)
        require_at_least("encoding.width", self.width, 1)
        require_positive_finite("encoding.init_threshold", self.init_threshold)
        # ψ(x) = log(|c·x| + 1) is even in c, so a negative c is the same transform; at c = 0
        # ψ and its gradient in c vanish, and FIRE would never see a distance.
        if not (self.init_c != 0 and math.isfinite(self.init_c)):
            raise ConfigError(
                f"encoding.init_c={self.init_c} must be finite and non-zero: at 0 the log "
                f"transform ψ(x) = log(|c·x| + 1) and its gradient vanish (the paper's is 0.1)."
            )

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return FunctionalInterpolation(
            model.num_layers, model.num_heads, self.width, self.init_c, self.init_threshold, rngs
        )
