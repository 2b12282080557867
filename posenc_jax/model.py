"""The tiny Transformer (Flax NNX), readable in one sitting.

    tokens [B, T] -> embed -> encoding.embed -> num_layers × Block -> final norm
                  -> head [B, T, outputs]

A Block is attention + MLP, each with a residual, in pre-LN (x + f(LN(x))) or post-LN (LN(x + f(x)))
form. The model calls the encoding's hooks unconditionally (see `encodings/base.py`): `embed` once
at the input, and `slot_features`, `rotate_qk`, `attention_logits`, `logit_bias`, `normalise`
and `attention_output` in every attention layer, which tells the encoding its index. Nothing
branches on the encoding's name.
`causal=True` adds a lower-triangular mask (decoder); otherwise attention is bidirectional
(encoder). Padding keys are masked out in both modes.

Mixed precision (`train.dtype=bfloat16`): the linear layers compute in bf16 from float32
parameters, so queries, keys, values and the MLP's activations are bf16, and attention's two
matmuls take bf16 inputs. The residual stream, the layer norms, the softmax and the logits'
log-softmax stay float32, and so do the encodings' own terms: their parameters and angles are
float32 (RoPE rotates in float32 and rounds the result).

`forward` runs every slot at once and also returns each layer's keys and values; a decoder's
`decode_step` runs one new slot against them, a key/value cache, so that greedy decoding
(`decoding.py`) costs one slot per answer, not one pass. Both go through the same layers and the
same hooks: the hooks see queries and keys with their own positions, whatever their numbers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.config import Settings
from posenc_jax.encodings import EncodingSpec, PositionalEncoding
from posenc_jax.encodings.base import Context, attention_scores
from posenc_jax.model_config import ModelConfig


def attention_mask(token_mask: jax.Array, causal: bool) -> jax.Array:
    """Which keys each query may attend to: [B, T] bool -> [B, 1, T, T] (True = may attend).
    Padding keys never; in a decoder (`causal`), no key after the query either."""
    mask = token_mask[:, None, None, :]
    if causal:
        length = token_mask.shape[1]
        mask = mask & jnp.tril(jnp.ones((length, length), dtype=bool))
    return mask


class KeyValues(NamedTuple):
    """One attention layer's keys and values at every slot, as the encoding's hooks receive them
    (before `rotate_qk`): each [B, T, heads, head_dim], and the encoding's `slot_features` of
    the same slots (None for most encodings). A decoder's key/value cache."""

    keys: jax.Array
    values: jax.Array
    features: Any

    def write(self, slot: jax.Array, new: KeyValues) -> KeyValues:
        """This cache with `new` (one slot per example: every leaf [B, 1, ...]) stored at each
        example's `slot` [B]."""
        rows = jnp.arange(slot.shape[0])
        return jax.tree.map(lambda cached, one: cached.at[rows, slot].set(one[:, 0]), self, new)


class Attention(nnx.Module):
    def __init__(self, config: ModelConfig, layer: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.layer = layer
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.qkv = nnx.Linear(
            config.d_model, 3 * config.d_model, use_bias=False, dtype=dtype, rngs=rngs
        )
        self.out = nnx.Linear(
            config.d_model, config.d_model, use_bias=False, dtype=dtype, rngs=rngs
        )

    def _qkv_products(self, x: jax.Array) -> list[jax.Array]:
        """x [B, T, D] -> queries, keys, values [B, T, D]: three products with the thirds of the
        fused kernel [D, 3D], in its compute dtype. One product split in three gives the same
        values up to rounding, but the split's backward pass pads each third's gradient to the
        fused width: the paper-config step took 386 ms that way, 362 ms this way (2-core CPU)."""
        inputs, kernel = self.qkv.promote_dtype((x, self.qkv.kernel[...]), dtype=self.qkv.dtype)
        return [inputs @ third for third in jnp.split(kernel, 3, axis=1)]

    def __call__(
        self,
        x: jax.Array,
        context: Context,
        encoding: PositionalEncoding,
        cache: KeyValues | None = None,
    ) -> tuple[jax.Array, jax.Array, KeyValues]:
        """x [B, Tq, D] at the query slots of `context` -> (output [B, Tq, D], attention weights
        [B, heads, Tq, T], the keys and values attended to).

        Without a cache the queries are the keys (Tq = T). With one, x is one new slot per
        example (Tq = 1): its key and value are written into the cache at `context.slot`, and
        the query attends to the whole cache through the same hooks as a full pass."""
        batch, length, _ = x.shape
        q, k, v = (
            product.reshape(batch, length, self.num_heads, self.head_dim)
            for product in self._qkv_products(x)
        )
        attended = KeyValues(k, v, encoding.slot_features(x, self.layer))
        if cache is not None:
            assert context.slot is not None, "a cache is only passed with the slot to write"
            attended = cache.write(context.slot, attended)
        logits = attention_scores(
            encoding, q, attended.keys, context, attended.features, self.layer
        )
        weights = encoding.normalise(logits, context, self.layer).astype(v.dtype)
        mixed = encoding.attention_output(
            weights, attended.values, context.q_positions, context.k_positions, self.layer
        )
        return self.out(mixed.reshape(batch, length, -1)), weights, attended


class MLP(nnx.Module):
    def __init__(self, config: ModelConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        hidden = config.mlp_ratio * config.d_model
        self.up = nnx.Linear(config.d_model, hidden, dtype=dtype, rngs=rngs)
        self.down = nnx.Linear(hidden, config.d_model, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.gelu(self.up(x)))


class Block(nnx.Module):
    def __init__(self, config: ModelConfig, layer: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.pre_norm = config.norm == "pre"
        # Norms in float32 (their default), whatever the matmuls' dtype.
        self.attention_norm = nnx.LayerNorm(config.d_model, rngs=rngs)
        self.attention = Attention(config, layer, dtype, rngs)
        self.mlp_norm = nnx.LayerNorm(config.d_model, rngs=rngs)
        self.mlp = MLP(config, dtype, rngs)

    def __call__(
        self, x, context: Context, encoding, cache: KeyValues | None = None
    ) -> tuple[jax.Array, jax.Array, KeyValues]:
        """-> (x [B, Tq, D], this block's attention weights [B, heads, Tq, T], its keys and
        values); see `Attention`."""
        if self.pre_norm:
            attended, weights, kv = self.attention(self.attention_norm(x), context, encoding, cache)
            x = x + attended
            return x + self.mlp(self.mlp_norm(x)), weights, kv
        attended, weights, kv = self.attention(x, context, encoding, cache)
        x = self.attention_norm(x + attended)
        return self.mlp_norm(x + self.mlp(x)), weights, kv


class Transformer(nnx.Module):
    """Encoder or decoder over the task's token ids, with one output head for the task's answers."""

    def __init__(
        self,
        config: ModelConfig,
        encoding: EncodingSpec,
        input_vocab_size: int,
        num_outputs: int,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
    ):
        """`dtype`: the linear layers' compute dtype (see the module docstring)."""
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
        self.blocks = nnx.List(
            [Block(config, layer, dtype, rngs) for layer in range(config.num_layers)]
        )
        # Pre-LN needs a final norm before the head; post-LN blocks already end in one.
        self.final_norm = nnx.LayerNorm(config.d_model, rngs=rngs) if config.norm == "pre" else None
        self.head = nnx.Linear(config.d_model, num_outputs, dtype=dtype, rngs=rngs)

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
    ) -> tuple[jax.Array, list[jax.Array], list[KeyValues]]:
        """One pass over every slot -> (logits [B, T, num_outputs], per-layer attention
        weights, per-layer keys and values: a decoder's cache after this pass). Under jit, XLA
        drops whatever the caller does not use."""
        context = Context(positions, positions, attention_mask(token_mask, self.causal), slot=None)
        return self._layers(tokens, context, caches=None)

    def decode_step(
        self,
        tokens: jax.Array,
        slot: jax.Array,
        positions: jax.Array,
        token_mask: jax.Array,
        caches: list[KeyValues],
    ) -> tuple[jax.Array, list[KeyValues]]:
        """A decoder's next slot, from the key/value cache of the slots before it.

        tokens [B, 1]: each example's token at its `slot` [B]; positions, token_mask [B, T]:
        the whole example's, as in `forward` (slots after `slot` are not attended to, so what
        the caches hold there does not matter). -> (logits [B, 1, num_outputs], the caches
        with this slot's keys and values written in). The logits equal those `forward` gives
        at `slot` for the same tokens up to it, up to float rounding."""
        slots = jnp.arange(positions.shape[1])[None, :]
        visible = token_mask & (slots <= slot[:, None])
        context = Context(
            q_positions=jnp.take_along_axis(positions, slot[:, None], axis=1),
            k_positions=positions,
            mask=visible[:, None, None, :],
            slot=slot,
        )
        logits, _, caches = self._layers(tokens, context, caches)
        return logits, caches

    def _layers(
        self, tokens: jax.Array, context: Context, caches: list[KeyValues] | None
    ) -> tuple[jax.Array, list[jax.Array], list[KeyValues]]:
        x = self.encoding.embed(self.embed(tokens), context.q_positions)
        weights, attended = [], []
        for layer, block in enumerate(self.blocks):
            cache = None if caches is None else caches[layer]
            x, layer_weights, kv = block(x, context, self.encoding, cache)
            weights.append(layer_weights)
            attended.append(kv)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.head(x), weights, attended


def build_model(settings: Settings, key: jax.Array) -> Transformer:
    """The run's model, with parameters initialised from `key`."""
    return Transformer(
        settings.model,
        settings.encoding,
        input_vocab_size=settings.task.input_vocab_size,
        num_outputs=settings.task.num_outputs,
        rngs=nnx.Rngs(params=key),
        dtype=jnp.dtype(settings.train.dtype),
    )
