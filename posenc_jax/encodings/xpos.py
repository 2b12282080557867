"""xPos: RoPE with an exponential decay/extrapolation scale (Sun et al. 2022, "A
Length-Extrapolatable Transformer"), as in the authors' torchscale code.

Each rotated pair i of a query at position n is multiplied by ζ_i^(n/B), and of a key at
position m by ζ_i^(−m/B), so their product carries ζ_i^((n−m)/B): relative, like RoPE, and, since
ζ_i < 1, decaying with distance in a decoder (n >= m). Fast-rotating pairs decay fastest.

    ζ_i = (2i + γ·d) / ((1 + γ)·d),  i = 0 .. d/2-1,  γ = `gamma` = 0.4
    q'_n = RoPE(q, n) ⊙ ζ^(n/B),     k'_m = RoPE(k, m) ⊙ ζ^(−m/B),     B = `scale_base` = 512

Example, d = 4: ζ = [1.6/5.6, 3.6/5.6] = [0.2857, 0.6429]. The rotation uses the interleaved
pairs (2i, 2i+1) of the authors' code. Like torchscale, positions are centred before scaling
(here on each example's first position; the shift cancels in q·k), so the numbers stay small;
even so an example can span only `finite_span` positions (24 521 at the defaults) before
ζ^(±Δ/B) leaves float32: longer evaluation lengths are reported as not representable, and
randomized positions must keep max_position within it.

In an encoder, keys to the right of the query (m > n) are amplified rather than decayed: the
formula is the paper's, which was designed for decoders; it is applied unchanged.

RoPE's context-extension rules (`encoding.scaling`) change the rotation only: the decay stays a
function of the true distance, which is what xPos relies on to extrapolate.

Shapes: x [batch, seq, heads, head_dim]; positions [batch, seq].
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from posenc_jax.encodings.rope import Rope, pair_values_to_dims
from posenc_jax.errors import ConfigError


def xpos_zeta(head_dim: int, gamma: float = 0.4) -> jax.Array:
    """ζ_i = (2i + γ·d) / ((1 + γ)·d): [head_dim // 2] float32."""
    return (jnp.arange(0, head_dim, 2, dtype=jnp.float32) + gamma * head_dim) / (
        (1 + gamma) * head_dim
    )


def xpos_scale(
    positions: jax.Array, head_dim: int, scale_base: float, gamma: float, is_query: bool
) -> jax.Array:
    """ζ^(+position/scale_base) for queries, ζ^(−position/scale_base) for keys:
    [batch, seq, head_dim/2]."""
    exponent = positions[..., None].astype(jnp.float32) / scale_base
    return xpos_zeta(head_dim, gamma) ** (exponent if is_query else -exponent)


# The largest |log| of a scale ζ^(±Δ/B) allowed: e^60 ≈ 1e26 leaves float32 (largest e^88.7)
# room for |q|·|k| in an encoder, where keys to the right are amplified by ζ^(−Δ/B).
MAX_LOG_SCALE = 60.0


@dataclasses.dataclass(frozen=True)
class Xpos(Rope):
    name = "xpos"
    scale_base: float = 512.0
    gamma: float = 0.4

    @property
    def zeta_0(self) -> float:
        """ζ_i at i = 0, the smallest, as float32 holds it (the scales are float32)."""
        return float(np.float32(self.gamma / (1 + self.gamma)))

    @property
    def finite_span(self) -> int:
        """How many positions an example may span with every scale finite in float32:
        Δ/B·|ln ζ_0| <= MAX_LOG_SCALE for the fastest-decaying pair (24 521 at the defaults).
        Needs valid constants (see `validate`)."""
        return int(MAX_LOG_SCALE * self.scale_base / abs(math.log(self.zeta_0)))

    @property
    def num_positions(self) -> int:
        inherited = super().num_positions
        return self.finite_span if inherited is None else min(inherited, self.finite_span)

    def validate(self, model) -> None:
        if self.fraction != 1:
            raise ConfigError(
                f"encoding.fraction={self.fraction}: xPos scales every rotated pair by its "
                f"decay, and its paper defines no partial rotation; keep encoding.fraction=1, "
                f"or use encoding=rope for partial rotation."
            )
        super().validate(model)
        constants_finite = math.isfinite(self.gamma) and math.isfinite(self.scale_base)
        if not (constants_finite and self.gamma > 0 and self.scale_base > 0):
            raise ConfigError(
                f"encoding.gamma={self.gamma} and encoding.scale_base={self.scale_base} must "
                f"both be positive and finite (the paper's are 0.4 and 512)."
            )
        # Extreme gammas round ζ_0 to 1, or below float32's normal range (CPUs flush it to 0).
        if not np.finfo(np.float32).tiny <= self.zeta_0 < 1:
            raise ConfigError(
                f"encoding.gamma={self.gamma} gives ζ_0 = gamma / (1 + gamma) = {self.zeta_0} "
                f"in float32, where xPos needs 0 < ζ_0 < 1 (a decay); choose gamma between "
                f"about 1e-30 and 1e6 (the paper's is 0.4)."
            )
        if self.finite_span < 1:
            raise ConfigError(
                f"encoding.scale_base={self.scale_base} is too small: xPos's scale leaves float32 "
                f"within one position; choose a larger encoding.scale_base (the paper's is 512)."
            )
        if self.randomized and self.max_position > self.finite_span:
            raise ConfigError(
                f"encoding.max_position={self.max_position} is more than xPos can span: its "
                f"scale ζ^(±Δ/scale_base) leaves float32 past {self.finite_span} positions "
                f"(with gamma={self.gamma}, scale_base={self.scale_base}). Choose "
                f"encoding.max_position <= {self.finite_span}, or a larger encoding.scale_base."
            )

    def scale_rotated(self, rotated: jax.Array, offsets: jax.Array, is_query: bool) -> jax.Array:
        # Offsets from the anchor, as torchscale centres positions: the scales stay within
        # ζ^(±span/B), and their product in q·k is still ζ^((n−m)/B).
        scale = xpos_scale(offsets, rotated.shape[-1], self.scale_base, self.gamma, is_query)
        scale = pair_values_to_dims(scale, self.layout)[:, :, None, :]  # every head
        scaled = super().scale_rotated(rotated, offsets, is_query).astype(jnp.float32) * scale
        return scaled.astype(rotated.dtype)
