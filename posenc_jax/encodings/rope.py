"""Rotary position embedding, RoPE (Su et al. 2021, "RoFormer", §3.4).

Each pair of query/key dimensions (x1, x2) at position p is rotated by the angle p·θ_i:

    θ_i = base^(-2i/d),  i = 0 .. d/2-1,  d = head_dim, base = 10000
    x1' = x1·cos(pθ_i) − x2·sin(pθ_i)
    x2' = x1·sin(pθ_i) + x2·cos(pθ_i)

so that <R(m)q, R(n)k> depends on m and n only through m − n, and every rotation keeps norms.
The rotation is applied element-wise, never as a dense [d, d] matrix.

Two layouts pair the dimensions differently; they are the same map up to a fixed permutation:
- "interleaved": pairs (2i, 2i+1), as in the paper and the original RoFormer/Mesh code;
- "half": pairs (i, i + d/2), the "rotate_half" layout of GPT-NeoX and HF LLaMA.

Partial rotation (`encoding.fraction` f < 1) rotates only some pairs; two rules say which
(`encoding.partial`), d = head_dim:
- "neox", GPT-J/GPT-NeoX partial rotary (HF transformers' `partial_rotary_factor`, GPT-NeoX's
  `rotary_pct`): the first r = int(f·d) dimensions are rotated as a RoPE of dimension r, with
  θ_i = base^(-2i/r), i < r/2, so the whole range of frequencies is squeezed into fewer pairs;
  dimensions r .. d-1 pass unrotated. With layout "half" the pairs are (i, i + r/2) inside that
  block, as GPT-NeoX's rotate_half; with "interleaved", (2i, 2i+1), as GPT-J. Kazemnejad et al.
  2023 use f = 0.25.
- "p_rope" (Barbero et al. 2024, "Round and Round We Go! What makes Rotary Positional Encodings
  useful?"; the rule of Gemma's `rope_proportion` in google-deepmind/gemma
  `gm/math/_positional_embeddings.py`): the first K = int(f·d // 2) pairs, the fastest, keep
  their θ_i = base^(-2i/d); the other d/2 − K pairs, the lowest frequencies, get θ = 0 and are
  not rotated. Pairs follow the layout over the whole head.
Example, d = 16, f = 0.25: neox rotates dimensions 0..3 with θ = 1, 0.01; p_rope rotates pairs
0 and 1 with θ = 1, 0.316 and leaves pairs 2..7 still.

Context extension (`encoding.scaling`: pi, ntk, dynamic_ntk, yarn, yarn_paper) changes θ_i; see
`rope_scaling.py`. It applies at training time and, since no parameter depends on it, can be
changed when a trained run is evaluated again (`posenc-eval`).

Shapes: x [batch, seq, heads, head_dim]; positions [batch, seq] int.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import (
    EncodingSpec,
    PositionalEncoding,
    first_position,
    require_frequency_base,
)
from posenc_jax.encodings.rope_scaling import (
    SCALINGS,
    YARN_RULES,
    check_scaling,
    rope_frequencies,
    yarn_attention_factor,
)
from posenc_jax.errors import ConfigError
from posenc_jax.spec import choice

LAYOUTS = ("interleaved", "half")
PARTIAL_RULES = ("neox", "p_rope")


def apply_rope(
    x: jax.Array, positions: jax.Array, inverse_frequencies: jax.Array, layout: str = "interleaved"
) -> jax.Array:
    """Rotate x [batch, seq, heads, head_dim] by positions [batch, seq] × inverse_frequencies,
    which are [head_dim/2] (see `rope_frequencies`) or per example [batch, head_dim/2]."""
    frequencies = jnp.asarray(inverse_frequencies, jnp.float32)
    if frequencies.ndim == 2:
        frequencies = frequencies[:, None, :]  # [batch, 1, head_dim/2], broadcast over seq
    angles = positions[..., None].astype(jnp.float32) * frequencies
    cos = jnp.cos(angles)[..., None, :]  # [batch, seq, 1, head_dim/2], broadcast over heads
    sin = jnp.sin(angles)[..., None, :]
    xf = x.astype(jnp.float32)
    if layout == "interleaved":
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
    else:
        x1, x2 = jnp.split(xf, 2, axis=-1)
    r1 = x1 * cos - x2 * sin
    r2 = x1 * sin + x2 * cos
    if layout == "interleaved":
        rotated = jnp.stack([r1, r2], axis=-1).reshape(x.shape)
    else:
        rotated = jnp.concatenate([r1, r2], axis=-1)
    return rotated.astype(x.dtype)


def pair_values_to_dims(values: jax.Array, layout: str) -> jax.Array:
    """Spread per-pair values [..., head_dim/2] onto both dimensions of each pair:
    [..., head_dim]."""
    if layout == "interleaved":
        return jnp.repeat(values, 2, axis=-1)
    return jnp.concatenate([values, values], axis=-1)


def sequence_lengths(positions: jax.Array) -> jax.Array:
    """Per-example length as the rotation sees it, last position + 1: [batch, seq] -> [batch].

    Padding sits at position 0, so it does not count."""
    return positions.max(axis=1) + 1


class RotaryEncoding(PositionalEncoding):
    """RoPE with a context-extension rule; `Rope.rotate` is the one place that applies it."""

    def __init__(self, spec: Rope):
        self.spec = spec  # frozen, hence a static part of the module

    def rotate_qk(self, q, k, q_positions, k_positions, layer):
        # One anchor and one set of frequencies for queries and keys, both read from the keys:
        # they span the whole example, so a query decoded on its own (one slot, against a
        # key/value cache) is rotated exactly as in a full forward pass.
        anchor = first_position(k_positions)
        frequencies = self.spec.frequencies(q.shape[-1], k_positions)
        return (
            self.spec.rotate(q, q_positions, True, anchor, frequencies),
            self.spec.rotate(k, k_positions, False, anchor, frequencies),
        )


@dataclasses.dataclass(frozen=True)
class Rope(EncodingSpec):
    """RoPE's parameters, and its context extension (`rope_scaling.py`): `scaling` is one of
    none/pi/ntk/dynamic_ntk/yarn/yarn_paper, `scale` the factor s, `original_max_len` the
    trained length (filled in from the task when a run starts)."""

    name = "rope"
    base: float = 10000.0
    layout: str = choice("interleaved", LAYOUTS)
    scaling: str = choice("none", SCALINGS)
    scale: float = 1.0
    original_max_len: int | None = None
    fraction: float = 1.0  # the share of each head that is rotated (see the module docstring)
    partial: str = choice("neox", PARTIAL_RULES)

    # Evaluation may change these without retraining: no parameter depends on them.
    evaluation_fields: ClassVar[tuple[str, ...]] = ("scaling", "scale", "original_max_len")

    def validate(self, model) -> None:
        super().validate(model)
        if model.head_dim % 2:
            raise ConfigError(
                f"RoPE rotates pairs of dimensions, but the head dimension is odd: "
                f"model.d_model={model.d_model} / model.num_heads={model.num_heads} = "
                f"{model.head_dim}. Choose d_model and num_heads so that d_model / num_heads is "
                "even."
            )
        require_frequency_base(self.base)
        check_scaling(self.scaling, self.scale, self.original_max_len)
        self._check_fraction(model.head_dim)
        if self.scaling in ("ntk", "dynamic_ntk") and self.rotary_dim(model.head_dim) < 4:
            raise ConfigError(
                f"encoding.scaling={self.scaling} changes the base by s^(d/(d-2)), which needs a "
                f"rotated dimension d of at least 4; it is {self.rotary_dim(model.head_dim)}."
            )

    def _check_fraction(self, head_dim: int) -> None:
        if not (0 < self.fraction <= 1):  # also refuses NaN
            raise ConfigError(
                f"encoding.fraction={self.fraction} must be in (0, 1]: the share of each head's "
                f"{head_dim} dimensions that RoPE rotates (1 = all)."
            )
        if self.fraction == 1:
            return
        if self.partial == "neox":
            rotated = self.rotary_dim(head_dim)
            if rotated < 2 or rotated % 2:
                valid = [f"{2 * i / head_dim:g}" for i in range(1, head_dim // 2 + 1)]
                raise ConfigError(
                    f"encoding.fraction={self.fraction} with encoding.partial=neox rotates "
                    f"int({self.fraction}·{head_dim}) = {rotated} dimensions, but rotation needs "
                    f"an even number of at least 2. For head_dim {head_dim} choose one of "
                    f"{valid}."
                )
        elif self.kept_pairs(head_dim) < 1:
            raise ConfigError(
                f"encoding.fraction={self.fraction} with encoding.partial=p_rope keeps "
                f"int({self.fraction}·{head_dim} // 2) = 0 pairs: nothing would rotate. Choose "
                f"encoding.fraction >= {2 / head_dim:g}, or encoding=nope."
            )
        elif self.scaling != "none":
            raise ConfigError(
                f"encoding.partial=p_rope with encoding.scaling={self.scaling}: no reference "
                f"defines context extension for p-RoPE. Use encoding.scaling=none, or "
                f"encoding.partial=neox (whose scaling Hugging Face defines over the rotated "
                f"dimensions)."
            )

    def rotary_dim(self, head_dim: int) -> int:
        """How many dimensions of each head the rotation spans: int(fraction·d) under "neox",
        else all d (p_rope zeroes frequencies instead)."""
        if self.fraction < 1 and self.partial == "neox":
            return int(self.fraction * head_dim)
        return head_dim

    def kept_pairs(self, head_dim: int) -> int:
        """p_rope's K = int(fraction·d // 2): the fastest pairs, which keep their frequency."""
        return int(self.fraction * head_dim // 2)

    def with_trained_length(self, trained_positions: int) -> Rope:
        if self.original_max_len is not None:
            return self
        return dataclasses.replace(self, original_max_len=trained_positions)

    def frequencies(self, head_dim: int, positions: jax.Array) -> jax.Array:
        """θ' for these positions [batch, seq]: [rotary_dim/2], or [batch, rotary_dim/2]
        (dynamic_ntk); under p_rope the pairs past `kept_pairs` are 0."""
        length = sequence_lengths(positions) if self.scaling == "dynamic_ntk" else None
        frequencies = rope_frequencies(
            self.rotary_dim(head_dim),
            self.base,
            self.scaling,
            self.scale,
            self.original_max_len,
            length,
        )
        if self.fraction < 1 and self.partial == "p_rope":
            frequencies = jnp.where(
                jnp.arange(head_dim // 2) < self.kept_pairs(head_dim), frequencies, 0.0
            )
        return frequencies

    def rotate(
        self,
        x: jax.Array,
        positions: jax.Array,
        is_query: bool,
        anchor: jax.Array | int = 0,
        frequencies: jax.Array | None = None,
    ) -> jax.Array:
        """x [batch, seq, heads, head_dim] rotated by positions − anchor ([batch, 1], or 0),
        times YaRN's attention factor under yarn.

        A shared anchor cancels in q·k, so the logits are RoPE's; it keeps the float32 angles
        as small as the example's span (the model anchors at each example's first position).
        `frequencies` default to `self.frequencies(head_dim, positions)`: they see the true
        positions (dynamic_ntk reads the sequence length from them).
        RoPE treats queries and keys alike; xPos (a subclass) does not, in `scale_rotated`."""
        if frequencies is None:
            frequencies = self.frequencies(x.shape[-1], positions)
        offsets = positions - anchor
        rotated_dims = self.rotary_dim(x.shape[-1])
        rotated = apply_rope(x[..., :rotated_dims], offsets, frequencies, self.layout)
        if rotated_dims < x.shape[-1]:  # neox partial rotation: the rest passes unrotated
            rotated = jnp.concatenate([rotated, x[..., rotated_dims:]], axis=-1)
        return self.scale_rotated(rotated, offsets, is_query)

    def scale_rotated(self, rotated: jax.Array, offsets: jax.Array, is_query: bool) -> jax.Array:
        """The rotated queries or keys [batch, seq, heads, head_dim] at positions `offsets`
        from the anchor, times YaRN's attention factor under yarn (xPos adds its decay)."""
        if self.scaling in YARN_RULES:
            rotated = rotated * yarn_attention_factor(self.scale)
        return rotated

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return RotaryEncoding(self)
