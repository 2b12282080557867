"""FoX, the Forgetting Transformer (Lin, Nikishin, He & Courville 2025, "Forgetting Transformer:
Softmax Attention with a Forget Gate", ICLR), as in the official code
(zhixuan-lin/forgetting-transformer: `ForgettingAttentionLayer` in
model/forgetting_transformer/modeling_forgetting_transformer.py, and the reference attention in
ops/forgetting_attention.py).

Each head has a scalar forget gate per slot, computed from the layer's input x_t, and the logits
are biased by the log gates accumulated between key and query:

    f_t = σ(w·x_t + b)                        one per head: w [d_model], b scalar
    c_t = Σ_{l ≤ t} log f_l                   inclusive cumulative sum over slots
    A_ij = q_i·k_j / sqrt(d) + c_i − c_j      = q_i·k_j / sqrt(d) + Σ_{l=j+1..i} log f_l

so the diagonal carries no bias and a key fades by its gates as the query moves away; with
every f_t = f it is ALiBi with slope −log f, but here the gates follow the content. As in the
official basic FoX (its `llama_*` configs), there is no other position encoding, no QK-norm,
output gate or token shift (those are FoX "Pro"). The gate's projection is a Linear with bias,
weight N(0, 0.02²) and bias 0 (the official `_init_weights`), so every gate starts at σ(0) = 1/2;
the log gates are computed in float32.

FoX is causal by definition (its kernel asserts `causal`; nothing bidirectional is defined):
an encoder is refused. Decoding keeps each slot's log gate beside its key and value, as the
official `FgateDynamicCache` does, and sums them again for the new query.

Per layer parameters: gate_kernel [num_layers, d_model, heads], gate_bias [num_layers, heads].
Shapes: x [batch, seq, d_model] -> log gates [batch, seq, heads].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import (
    Context,
    EncodingSpec,
    PositionalEncoding,
    scaled_dot_product,
)

# The official initializer_range: N(0, 0.02²) for every Linear weight, zero biases.
INIT_STD = 0.02


def log_forget_gates(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """log σ(x·W + b) in float32: x [batch, seq, d_model], W [d_model, heads], b [heads]
    -> [batch, seq, heads]."""
    logits = jnp.einsum("btm,mh->bth", x.astype(jnp.float32), kernel) + bias
    return jax.nn.log_sigmoid(logits)


def forgetting_bias(log_gates: jax.Array, q_slots: jax.Array) -> jax.Array:
    """c_i − c_j = Σ_{l=j+1..i} log f_l for every query slot i and key slot j: log gates
    [batch, k_len, heads] of the key slots, query slots [batch or 1, q_len] ->
    [batch, heads, q_len, k_len]. Entries with j > i are positive and must be masked.

    Worked example, one head, log gates [−1, −2, −3]: c = [−1, −3, −6], and the query at slot 2
    gets biases [−5, −3, 0] for keys 0, 1, 2."""
    cumulative = jnp.cumsum(log_gates, axis=1).transpose(0, 2, 1)  # [batch, heads, k_len]
    batch, heads, _ = cumulative.shape
    slots = jnp.broadcast_to(q_slots[:, None, :], (batch, heads, q_slots.shape[-1]))
    at_queries = jnp.take_along_axis(cumulative, slots, axis=2)  # [batch, heads, q_len]
    return at_queries[..., :, None] - cumulative[..., None, :]


class ForgetGates(nnx.Module):
    """The per-layer forget-gate projections, shared by FoX and PaTH-FoX."""

    def __init__(self, num_layers: int, d_model: int, num_heads: int, rngs: nnx.Rngs):
        init = jax.nn.initializers.normal(INIT_STD)
        self.kernel = nnx.Param(init(rngs.params(), (num_layers, d_model, num_heads)))
        self.bias = nnx.Param(jnp.zeros((num_layers, num_heads)))

    def __call__(self, x: jax.Array, layer: int) -> jax.Array:
        return log_forget_gates(x, self.kernel[layer], self.bias[layer])


class ForgettingAttention(PositionalEncoding):
    def __init__(self, num_layers: int, d_model: int, num_heads: int, rngs: nnx.Rngs):
        self.gates = ForgetGates(num_layers, d_model, num_heads, rngs)

    def slot_features(self, x, layer):
        return self.gates(x, layer)

    def attention_logits(self, q, k, context: Context, features, layer):
        return scaled_dot_product(q, k) + forgetting_bias(features, context.q_slots)


@dataclasses.dataclass(frozen=True)
class Fox(EncodingSpec):
    name = "fox"
    family = "contextual"
    decoder_only_because = (
        "the forget gates decay a key by the gates between it and a later query, and the "
        "official code defines only the causal form (its kernel asserts causal)."
    )

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return ForgettingAttention(model.num_layers, model.d_model, model.num_heads, rngs)
