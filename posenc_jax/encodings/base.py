"""The hook interface every positional encoding implements.

An encoding can act at seven points of the Transformer. Each hook defaults to "do nothing", so
the model calls all of them unconditionally and never branches on an encoding's name:

1. `embed(x, positions)`: add to the token embeddings (absolute encodings).
2. `slot_features(x, layer)`: per-slot values computed from the attention layer's input, for
   encodings whose positional term depends on the data (FoX's forget gates, PaTH's Householder
   vectors). They are kept beside the keys in a decoder's key/value cache. Default: None.
3. `rotate_qk(q, k, q_positions, k_positions, layer)`: transform queries and keys (RoPE, xPos).
4. `attention_logits(q, k, context, features, layer)`: the logits, for encodings whose positional
   term depends on content or on the data (Shaw, DeBERTa, Transformer-XL, CoPE, FoX, PaTH).
   Default: q·k / sqrt(head_dim).
5. `logit_bias(q_positions, k_positions, layer)`: a content-independent bias added to the
   logits (ALiBi, T5, KERPLE, FIRE). Encodings shared by all layers ignore `layer`; XLA
   computes identical per-layer biases once.
6. `normalise(logits, context, layer)`: turn the masked logits into attention weights
   (stick-breaking replaces the softmax). Default: the softmax over keys, in float32.
7. `attention_output(weights, v, q_positions, k_positions, layer)`: mix the values with the
   attention weights (Shaw's value embeddings). Default: Σ_j weights_ij v_j.

`project_parameters()` runs after every optimizer step, for encodings whose parameters live in
a constrained set that the paper's code enforces by projection (KERPLE's positive parameters).

Shapes: x [batch, seq, d_model]; q, k, v [batch, seq, heads, head_dim]; positions [batch, seq]
int32; mask [batch, 1, q_len, k_len] bool (True = may attend); logits and weights
[batch, heads, q_len, k_len]; `features` whatever `slot_features` returns, with [batch, k_len]
leading every leaf; `layer` is the attention layer's index (a Python int), so an encoding with
per-layer parameters stores them stacked on a leading [num_layers] axis. `context` (`Context`)
says where the queries and keys sit: their positions, the mask, and the queries' slots.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.errors import ConfigError, require_at_least
from posenc_jax.model_config import ModelConfig
from posenc_jax.spec import Spec
from posenc_jax.tasks.base import DigitRoles, NumberTask, TaskSpec

# Positions become float32 angles and biases: past 2^24 it no longer holds every integer.
MAX_POSITION = 2**24


def require_table_size(table_size: int) -> None:
    """A learned position table's rows (learned, Abacus): ConfigError outside 1 .. 2^24, where
    positions stop being exact and the table alone would need gigabytes."""
    if not 1 <= table_size <= MAX_POSITION:
        raise ConfigError(
            f"encoding.table_size={table_size} must be between 1 and {MAX_POSITION} (2^24, the "
            f"most positions this harness represents exactly)."
        )


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


class Context(NamedTuple):
    """Where attention's queries and keys sit: positions [B, Tq] and [B, T] int, the mask
    [B, 1, Tq, T] bool (True = may attend), and, when one new slot is decoded against a
    key/value cache, that slot's index per example [B] (None in a full pass, where Tq = T)."""

    q_positions: jax.Array
    k_positions: jax.Array
    mask: jax.Array
    slot: jax.Array | None

    @property
    def q_slots(self) -> jax.Array:
        """Each query's slot, the index of its own key: [B, Tq] in a decode step, [1, T] in a
        full pass. Encodings that follow the order of slots rather than positions (FoX,
        stick-breaking, PaTH) read it."""
        if self.slot is not None:
            return self.slot[:, None]
        return jnp.arange(self.k_positions.shape[1])[None, :]


MASKED = -1e9  # finite, so a row with every key masked gives a uniform softmax, not NaN


def attention_scores(
    encoding: PositionalEncoding,
    q: jax.Array,
    k: jax.Array,
    context: Context,
    features: Any,
    layer: int,
) -> jax.Array:
    """The masked attention logits of one layer, through every hook that shapes them:
    rotate_qk -> attention_logits -> + logit_bias -> mask (masked entries are MASKED).

    The one path from queries and keys to scores, used by the model and by `posenc-inspect`, so
    a picture shows exactly what attention computes. q, k [B, T, heads, head_dim]; `features`
    from `slot_features` for the keys' slots -> [B, heads, q_len, k_len].
    """
    compute_dtype = q.dtype
    q, k = encoding.rotate_qk(q, k, context.q_positions, context.k_positions, layer)
    q, k = q.astype(compute_dtype), k.astype(compute_dtype)
    logits = encoding.attention_logits(q, k, context, features, layer)
    bias = encoding.logit_bias(context.q_positions, context.k_positions, layer)
    if bias is not None:
        logits = logits + bias
    return jnp.where(context.mask, logits, MASKED)


def scaled_dot_product(q: jax.Array, k: jax.Array) -> jax.Array:
    """q·k / sqrt(head_dim): q [batch, q_len, heads, d], k [batch, k_len, heads, d]
    -> [batch, heads, q_len, k_len]."""
    return jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)


class PositionalEncoding(nnx.Module):
    """The do-nothing encoding; subclasses override the hooks they need."""

    def embed(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        return x

    def slot_features(self, x: jax.Array, layer: int) -> Any:
        """Per-slot values from the attention layer's input x [batch, seq, d_model]: a pytree
        whose leaves lead with [batch, seq], or None."""
        return None

    def rotate_qk(
        self,
        q: jax.Array,
        k: jax.Array,
        q_positions: jax.Array,
        k_positions: jax.Array,
        layer: int,
    ) -> tuple[jax.Array, jax.Array]:
        return q, k

    def attention_logits(
        self, q: jax.Array, k: jax.Array, context: Context, features: Any, layer: int
    ) -> jax.Array:
        return scaled_dot_product(q, k)

    def logit_bias(
        self, q_positions: jax.Array, k_positions: jax.Array, layer: int
    ) -> jax.Array | None:
        """A bias broadcastable to [batch, heads, q_len, k_len], or None."""
        return None

    def normalise(self, logits: jax.Array, context: Context, layer: int) -> jax.Array:
        """Attention weights from the masked logits [batch, heads, q_len, k_len] (float32)."""
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

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
    (terms derived from content and the order of slots, no position ids: CoPE, FoX,
    stick-breaking, PaTH) or "none".

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
    # Why the encoding exists only in a decoder, for those whose official code defines no
    # bidirectional form ("" = both modes); `validate` refuses an encoder with this reason.
    decoder_only_because: ClassVar[str] = ""
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

    def positions_needed(self, task: TaskSpec, n: int, causal: bool, training: bool) -> int:
        """How many positions (0 .. that − 1) an example of input length n of `task` may use,
        in training or in evaluation: its slots (`DigitPositions`: its largest id + 1)."""
        return task.sequence_len(n)

    def with_trained_length(self, trained_positions: int) -> EncodingSpec:
        """This spec with the parameters that default to the number of positions seen in
        training filled in (RoPE scaling's original_max_len); most encodings have none."""
        return self

    def validate(self, model: ModelConfig) -> None:
        """Raise `ConfigError` if this encoding cannot work with `model`."""
        if self.decoder_only_because and not model.causal:
            raise ConfigError(
                f"encoding={self.name} is defined for decoders only: "
                f"{self.decoder_only_because} This harness refuses it in an encoder rather than "
                f"invent a two-sided form. Set model.causal=true."
            )
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


@dataclasses.dataclass(frozen=True)
class DigitPositions(EncodingSpec, abc.ABC):
    """An encoding whose positions are ids made from a `NumberTask`'s digit roles (Abacus,
    position coupling), with random offsets of its own in training; a learned row per id."""

    family = "absolute"

    @abc.abstractmethod
    def positions_from_roles(self, roles: DigitRoles, key: jax.Array, training: bool) -> jax.Array:
        """Position ids [batch, T] int32 from the digit roles, with this batch's random draws
        from `key` (training) or the fixed evaluation rule."""

    @abc.abstractmethod
    def largest_id(self, largest_place: int, training: bool) -> int:
        """The largest id an example whose largest place value is `largest_place` may get."""

    def positions_needed(self, task: TaskSpec, n: int, causal: bool, training: bool) -> int:
        assert isinstance(task, NumberTask), "the settings refuse a task without digit roles"
        return self.largest_id(task.largest_place(n, causal), training) + 1

    def validate(self, model: ModelConfig) -> None:
        super().validate(model)
        if self.randomized:
            raise ConfigError(
                f"encoding.randomized=true does not apply to encoding {self.name!r}: its "
                f"positions are ids from the digits' places, with random offsets of their own."
            )
