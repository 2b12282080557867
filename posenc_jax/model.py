"""The tiny Transformer (Flax NNX), readable in one sitting.

    tokens [B, T] -> embed -> encoding.embed -> num_layers × Block -> final norm
                  -> head [B, T, outputs]

A Block is attention + MLP, each with a residual, in pre-LN (x + f(LN(x))) or post-LN (LN(x + f(x)))
form. The model calls the encoding's hooks unconditionally (see `encodings/base.py`): `embed` once
at the input, and `rotate_qk`, `attention_logits`, `logit_bias`, `attention_output` in every
attention layer, which tells the encoding its index. Nothing branches on the encoding's name.
`causal=True` adds a lower-triangular mask (decoder); otherwise attention is bidirectional
(encoder). Padding keys are masked out in both modes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.config import Settings
from posenc_jax.encodings import EncodingSpec, PositionalEncoding
from posenc_jax.model_config import ModelConfig

MASKED = -1e9  # finite, so a row with every key masked gives a uniform softmax, not NaN


def attention_mask(token_mask: jax.Array, causal: bool) -> jax.Array:
    """Which keys each query may attend to: [B, T] bool -> [B, 1, T, T] (True = may attend).
    Padding keys never; in a decoder (`causal`), no key after the query either."""
    mask = token_mask[:, None, None, :]
    if causal:
        length = token_mask.shape[1]
        mask = mask & jnp.tril(jnp.ones((length, length), dtype=bool))
    return mask


def attention_scores(
    encoding: PositionalEncoding,
    q: jax.Array,
    k: jax.Array,
    q_positions: jax.Array,
    k_positions: jax.Array,
    mask: jax.Array,
    layer: int,
) -> jax.Array:
    """The masked attention logits of one layer, through every hook that shapes them:
    rotate_qk -> attention_logits -> + logit_bias -> mask (masked entries are MASKED).

    The one path from queries and keys to scores, used by the model and by `posenc-inspect`, so
    a picture shows exactly what attention computes. q, k [B, T, heads, head_dim]; positions
    [B, T] int; mask [B, 1, q_len, k_len] bool -> [B, heads, q_len, k_len].
    """
    q, k = encoding.rotate_qk(q, k, q_positions, k_positions)
    logits = encoding.attention_logits(q, k, q_positions, k_positions, mask, layer)
    bias = encoding.logit_bias(q_positions, k_positions, layer)
    if bias is not None:
        logits = logits + bias
    return jnp.where(mask, logits, MASKED)


class Attention(nnx.Module):
    def __init__(self, config: ModelConfig, layer: int, rngs: nnx.Rngs):
        self.layer = layer
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.qkv = nnx.Linear(config.d_model, 3 * config.d_model, use_bias=False, rngs=rngs)
        self.out = nnx.Linear(config.d_model, config.d_model, use_bias=False, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        mask: jax.Array,
        encoding: PositionalEncoding,
    ) -> tuple[jax.Array, jax.Array]:
        """x [B, T, D], positions [B, T], mask [B, 1, T, T] bool (True = may attend) ->
        (output [B, T, D], attention weights [B, heads, T, T])."""
        batch, length, _ = x.shape
        q, k, v = jnp.split(
            self.qkv(x).reshape(batch, length, 3 * self.num_heads, self.head_dim), 3, axis=2
        )
        logits = attention_scores(encoding, q, k, positions, positions, mask, self.layer)
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(x.dtype)
        mixed = encoding.attention_output(weights, v, positions, positions, self.layer)
        return self.out(mixed.reshape(batch, length, -1)), weights


class MLP(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        hidden = config.mlp_ratio * config.d_model
        self.up = nnx.Linear(config.d_model, hidden, rngs=rngs)
        self.down = nnx.Linear(hidden, config.d_model, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.gelu(self.up(x)))


class Block(nnx.Module):
    def __init__(self, config: ModelConfig, layer: int, rngs: nnx.Rngs):
        self.pre_norm = config.norm == "pre"
        self.attention_norm = nnx.LayerNorm(config.d_model, rngs=rngs)
        self.attention = Attention(config, layer, rngs)
        self.mlp_norm = nnx.LayerNorm(config.d_model, rngs=rngs)
        self.mlp = MLP(config, rngs)

    def __call__(self, x, positions, mask, encoding) -> tuple[jax.Array, jax.Array]:
        """-> (x [B, T, D], this block's attention weights [B, heads, T, T])."""
        if self.pre_norm:
            attended, weights = self.attention(self.attention_norm(x), positions, mask, encoding)
            x = x + attended
            return x + self.mlp(self.mlp_norm(x)), weights
        attended, weights = self.attention(x, positions, mask, encoding)
        x = self.attention_norm(x + attended)
        return self.mlp_norm(x + self.mlp(x)), weights


class Transformer(nnx.Module):
    """Encoder or decoder over the task's token ids, with one output head for the task's answers."""

    def __init__(
        self,
        config: ModelConfig,
        encoding: EncodingSpec,
        input_vocab_size: int,
        num_outputs: int,
        rngs: nnx.Rngs,
    ):
        self.causal = config.causal
        # Unit-variance embeddings: the same scale as Vaswani et al.'s sqrt(d)-scaled ones, so an
        # added sinusoidal code (amplitude 1) neither drowns nor vanishes.
        self.embed = nnx.Embed(
            input_vocab_size,
            config.d_model,
            embedding_init=jax.nn.initializers.normal(1.0),
            rngs=rngs,
        )
        self.encoding = encoding.build(config, rngs)
        self.blocks = nnx.List([Block(config, layer, rngs) for layer in range(config.num_layers)])
        # Pre-LN needs a final norm before the head; post-LN blocks already end in one.
        self.final_norm = nnx.LayerNorm(config.d_model, rngs=rngs) if config.norm == "pre" else None
        self.head = nnx.Linear(config.d_model, num_outputs, rngs=rngs)

    def __call__(self, tokens: jax.Array, positions: jax.Array, token_mask: jax.Array) -> jax.Array:
        """tokens, positions [B, T] int; token_mask [B, T] bool -> logits [B, T, num_outputs]."""
        return self.forward(tokens, positions, token_mask)[0]

    def attention_weights(
        self, tokens: jax.Array, positions: jax.Array, token_mask: jax.Array
    ) -> list[jax.Array]:
        """The attention weights of every layer, each [B, heads, T, T] (rows: queries)."""
        return self.forward(tokens, positions, token_mask)[1]

    def forward(
        self, tokens: jax.Array, positions: jax.Array, token_mask: jax.Array
    ) -> tuple[jax.Array, list[jax.Array]]:
        """-> (logits [B, T, num_outputs], per-layer attention weights). Under jit, XLA drops
        whichever of the two the caller does not use."""
        mask = attention_mask(token_mask, self.causal)
        x = self.encoding.embed(self.embed(tokens), positions)
        weights = []
        for block in self.blocks:
            x, layer_weights = block(x, positions, mask, self.encoding)
            weights.append(layer_weights)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.head(x), weights


def build_model(settings: Settings, key: jax.Array) -> Transformer:
    """The run's model, with parameters initialised from `key`."""
    return Transformer(
        settings.model,
        settings.encoding,
        input_vocab_size=settings.task.input_vocab_size,
        num_outputs=settings.task.num_outputs,
        rngs=nnx.Rngs(params=key),
    )
