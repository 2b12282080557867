"""The hook interface every positional encoding implements.

An encoding can act at five points of the Transformer. Each hook defaults to "do nothing", so
the model calls all of them unconditionally and never branches on an encoding's name:

1. `embed(x, positions)`: add to the token embeddings (absolute encodings).
2. `rotate_qk(q, k, q_positions, k_positions)`: transform queries and keys (RoPE, xPos).
3. `attention_logits(q, k, q_positions, k_positions, mask, layer)`: the logits, for encodings
   whose positional term depends on content (Shaw, DeBERTa, Transformer-XL, CoPE).
   Default: q·k / sqrt(head_dim).
4. `logit_bias(q_positions, k_positions, layer)`: a content-independent bias added to the
   logits (ALiBi, T5, KERPLE, FIRE). Encodings shared by all layers ignore `layer`; XLA
   computes identical per-layer biases once.
5. `attention_output(weights, v, q_positions, k_positions, layer)`: mix the values with the
   attention weights (Shaw's value embeddings). Default: Σ_j weights_ij v_j.

`project_parameters()` runs after every optimizer step, for encodings whose parameters live in
a constrained set that the paper's code enforces by projection (KERPLE's positive parameters).

Shapes: x [batch, seq, d_model]; q, k, v [batch, seq, heads, head_dim]; positions [batch, seq]
int32; mask [batch, 1, q_len, k_len] bool (True = may attend); logits and weights
[batch, heads, q_len, k_len]; `layer` is the attention layer's index (a Python int), so an
encoding with per-layer parameters stores them stacked on a leading [num_layers] axis.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.errors import ConfigError, require_at_least
from posenc_jax.model_config import ModelConfig
from posenc_jax.spec import Spec

# Positions become float32 angles and biases: past 2^24 it no longer holds every integer.
MAX_POSITION = 2**24


def require_frequency_base(base: float) -> None:
    """The base b of sinusoid frequencies b^(-2i/d) (sinusoidal, RoPE, xPos, Transformer-XL):
    ConfigError unless 1 < b < inf. At b = 1 every pair turns at the same rate, below 1 the
    frequencies grow with i, and at inf all but the first pair stop."""
    if not (base > 1 and math.isfinite(base)):
        raise ConfigError(
            f"encoding.base={base} must be finite and greater than 1 (the papers use 10000)."
        )


def relative_positions(q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
    """Key minus query position, j − i: [batch, q_len], [batch, k_len] -> [batch, q_len, k_len]."""
    return k_positions[:, None, :] - q_positions[:, :, None]


def first_position(positions: jax.Array) -> jax.Array:
    """Each example's first slot's position, [batch, 1]: the anchor that rotary and sinusoidal
    relative encodings subtract before turning positions into angles.

    The difference is exact in int32, so the float32 angles stay as small as the example's own
    span: shifting every position changes nothing at all, however far the shift, and a
    key/value cache anchored at slot 0 stays valid. Slot 0 holds the first input token in every
    task's layout, the smallest position of its example."""
    return positions[:, :1]


def scaled_dot_product(q: jax.Array, k: jax.Array) -> jax.Array:
    """q·k / sqrt(head_dim): q [batch, q_len, heads, d], k [batch, k_len, heads, d]
    -> [batch, heads, q_len, k_len]."""
    return jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)


class PositionalEncoding(nnx.Module):
    """The do-nothing encoding; subclasses override the hooks they need."""

    def embed(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        return x

    def rotate_qk(
        self, q: jax.Array, k: jax.Array, q_positions: jax.Array, k_positions: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        return q, k

    def attention_logits(
        self,
        q: jax.Array,
        k: jax.Array,
        q_positions: jax.Array,
        k_positions: jax.Array,
        mask: jax.Array,
        layer: int,
    ) -> jax.Array:
        return scaled_dot_product(q, k)

    def logit_bias(
        self, q_positions: jax.Array, k_positions: jax.Array, layer: int
    ) -> jax.Array | None:
        """A bias broadcastable to [batch, heads, q_len, k_len], or None."""
        return None

    def attention_output(
        self,
        weights: jax.Array,
        v: jax.Array,
        q_positions: jax.Array,
        k_positions: jax.Array,
        layer: int,
    ) -> jax.Array:
        return jnp.einsum("bhqk,bkhd->bqhd", weights, v)

    def project_parameters(self) -> None:
        """Move parameters back into their valid set, in place; called after each optimizer step."""


@dataclasses.dataclass(frozen=True)
class EncodingSpec(Spec, abc.ABC):
    """An encoding's parameters; builds the module that implements its hooks.

    `family` says what the encoding sees: "absolute" (positions themselves), "relative" (only
    differences of positions, so shifting every position changes nothing), "contextual"
    (counts derived from content, no position ids) or "none".

    Every encoding that reads position ids accepts randomized positions (Ruoss et al. 2023,
    "Randomized Positional Encodings Boost Length Generalization of Transformers"): with
    `randomized=True`, each training example's positions are a sorted random subset of
    [0, max_position) instead of 0..T-1, so the encoding meets positions up to max_position
    during training. Evaluation draws them the same way from a fixed key (see
    `posenc_jax.positions`). Encodings that read no positions reject the option and say why.
    """

    family: ClassVar[str] = "relative"
    # Whether `logit_bias` adds a content-independent bias (ALiBi, T5, KERPLE, FIRE): a declared
    # fact, like `family`, that `posenc_jax.inspection.attention_bias` relies on.
    adds_logit_bias: ClassVar[bool] = False
    # Fields a trained run may be re-evaluated with (`posenc-eval`): no parameter depends on them.
    evaluation_fields: ClassVar[tuple[str, ...]] = ()

    randomized: bool = False
    max_position: int = 2048  # Ruoss et al.'s L for randomized positions

    @property
    def num_positions(self) -> int | None:
        """How many positions (0 .. num_positions-1) the encoding can represent; None = any.

        With randomized positions, sequences longer than max_position cannot be laid out."""
        return self.max_position if self.randomized else None

    def represents(self, num_positions: int) -> bool:
        """Whether positions 0 .. num_positions-1 all exist for this encoding."""
        return self.num_positions is None or num_positions <= self.num_positions

    def with_trained_length(self, trained_positions: int) -> EncodingSpec:
        """This spec with the parameters that default to the number of positions seen in
        training filled in (RoPE scaling's original_max_len); most encodings have none."""
        return self

    def validate(self, model: ModelConfig) -> None:
        """Raise `ConfigError` if this encoding cannot work with `model`."""
        if self.randomized and self.family in ("none", "contextual"):
            raise ConfigError(
                f"encoding.randomized=true does not apply to encoding {self.name!r}: it reads no "
                f"position ids ({self.family}), so there are no positions to randomize. "
                f"Set encoding.randomized=false."
            )
        require_at_least("encoding.max_position", self.max_position, 1)
        if self.max_position > MAX_POSITION:
            raise ConfigError(
                f"encoding.max_position={self.max_position} is past {MAX_POSITION} (2^24), the "
                f"last integer that float32, in which positions become angles and biases, holds "
                f"exactly. Choose encoding.max_position <= {MAX_POSITION}."
            )

    @abc.abstractmethod
    def build(self, model: ModelConfig, rngs: nnx.Rngs) -> PositionalEncoding:
        """Create the encoding's module (and its parameters, if any)."""
