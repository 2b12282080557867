"""The hook interface every positional encoding implements.

An encoding can act at three points of the Transformer. Each hook defaults to "do nothing", so
the model calls all of them unconditionally and never branches on an encoding's name:

1. `embed(x, positions)`: add to the token embeddings (absolute encodings).
2. `rotate_qk(q, k, q_positions, k_positions)`: transform queries and keys (RoPE, xPos).
3. `logit_bias(q_positions, k_positions)`: add a bias to the attention logits (ALiBi, T5, ...);
   computed once per forward pass and shared by every layer.

Shapes: x [batch, seq, d_model]; q, k [batch, seq, heads, head_dim]; positions [batch, seq]
int32; a logit bias broadcasts against [batch, heads, q_len, k_len].
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, ClassVar

import jax
from flax import nnx

from posenc_jax.spec import Spec

if TYPE_CHECKING:
    from posenc_jax.config import ModelConfig


def relative_positions(q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
    """Key minus query position, j − i: [batch, q_len], [batch, k_len] -> [batch, q_len, k_len]."""
    return k_positions[:, None, :] - q_positions[:, :, None]


class PositionalEncoding(nnx.Module):
    """The do-nothing encoding; subclasses override the hooks they need."""

    def embed(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        return x

    def rotate_qk(
        self, q: jax.Array, k: jax.Array, q_positions: jax.Array, k_positions: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        return q, k

    def logit_bias(self, q_positions: jax.Array, k_positions: jax.Array) -> jax.Array | None:
        return None


@dataclasses.dataclass(frozen=True)
class EncodingSpec(Spec, abc.ABC):
    """An encoding's parameters; builds the module that implements its hooks.

    `family` says what the encoding sees: "absolute" (positions themselves), "relative" (only
    differences of positions, so shifting every position changes nothing), or "none".
    """

    family: ClassVar[str] = "relative"

    @property
    def max_positions(self) -> int | None:
        """How many positions (0 .. max_positions-1) the encoding can represent; None = any."""
        return None

    def represents(self, num_positions: int) -> bool:
        """Whether positions 0 .. num_positions-1 all exist for this encoding."""
        return self.max_positions is None or num_positions <= self.max_positions

    def validate(self, model: "ModelConfig") -> None:
        """Raise `ConfigError` if this encoding cannot work with `model`."""

    @abc.abstractmethod
    def build(self, model: "ModelConfig", rngs: nnx.Rngs) -> PositionalEncoding:
        """Create the encoding's module (and its parameters, if any)."""
