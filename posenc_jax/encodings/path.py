"""PaTH attention (Yang, Shen, Wen, Tan, Mishra, Ren, Panda & Kim 2025, "PaTH Attention: Position
Encoding via Accumulating Householder Transformations", NeurIPS), as in the reference
implementation in fla-org/flash-linear-attention (`fla/layers/path_attn.py`, `PaTHAttention`;
the logits of `fla/ops/path_attn/naive.py`).

Between key j and query i, the key passes through one data-dependent Householder-like transform
per slot after it, up to and including the query's:

    H_t = I − β_t w_t w_tᵀ                      w_t unit length, β_t = 2σ(·) in (0, 2)
    A_ij = q_iᵀ H_i H_{i−1} ⋯ H_{j+1} k_j / sqrt(d)        (A_ii = q_i·k_i / sqrt(d))

with, from the layer's input x_t (the reference's defaults):
- w_t = l2norm(silu(conv(x W_down W_up))_t) per head: a low-rank projection (rank 32, no bias),
  then a causal depthwise convolution over the last 3 slots (no bias), SiLU, and per-head
  normalisation x / sqrt(Σx² + 1e-6);
- β_t = 2σ(x_t·W_β + b_β), one per head ("allowing negative eigenvalues": β > 1 reflects);
- with `forget_gate` (PaTH-FoX, off by default), FoX's bias is added before the scaling, as the
  reference does: A_ij = (q_iᵀ P_ij k_j + c_i − c_j) / sqrt(d).
Weights are N(0, 0.02²) and biases 0 (the reference model's `_init_weights`); no other position
encoding is used.

The direct form here needs no blocking and never inverts a product (H_t is singular when
β_t = 1, so P_i P_j⁻¹ can fail, which is why the official kernel avoids it too): one scan over
the key slots from last to first carries each query's transformed vector,
u_ij = H_{j+1} u_i,j+1 with u_ii = q_i (H is symmetric), and A_ij = u_ij·k_j / sqrt(d).
Cost: q_len·k_len·d multiply-adds per head, like q·k, but as k_len sequential steps, and the
backward pass keeps k_len × [batch, heads, q_len, d] of saved vectors. Decoding runs the same
scan for the one new query over the cached keys and features (raw projections, so the
convolution sees the slots before). Float32 throughout.

PaTH is causal by definition (the reference masks causally and defines nothing bidirectional):
an encoder is refused.

Per layer parameters: w_down [L, d_model, rank], w_up [L, rank, d_model], w_conv [L, 3, d_model],
beta_kernel [L, d_model, heads], beta_bias [L, heads]. Shapes: q, k [batch, seq, heads, d].
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import Context, EncodingSpec, PositionalEncoding
from posenc_jax.encodings.fox import INIT_STD, ForgetGates, forgetting_bias
from posenc_jax.errors import require_at_least

L2_EPS = 1e-6  # fla's l2_norm


class PathFeatures(NamedTuple):
    """Per-slot inputs of the transforms, before the convolution: [batch, seq, d_model] and
    β [batch, seq, heads]; FoX's log gates [batch, seq, heads] with `forget_gate`, else None."""

    projected: jax.Array
    beta: jax.Array
    log_gates: jax.Array | None


def causal_depthwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """y_t = Σ_k kernel[k] ⊙ x_{t−(K−1)+k}, zeros before the first slot (PyTorch's Conv1d with
    K−1 left padding, cut to the sequence): x [batch, seq, channels], kernel [K, channels]."""
    width = kernel.shape[0]
    padded = jnp.pad(x, ((0, 0), (width - 1, 0), (0, 0)))
    return jnp.stack([kernel[k] * padded[:, k : k + x.shape[1]] for k in range(width)]).sum(0)


def householder_vectors(projected: jax.Array, conv: jax.Array, num_heads: int) -> jax.Array:
    """w_t = l2norm(silu(conv(projected)))_t per head: [batch, seq, d_model] ->
    [batch, seq, heads, head_dim] float32."""
    w = jax.nn.silu(causal_depthwise_conv(projected, conv))
    w = w.reshape(*w.shape[:2], num_heads, -1)
    return w / jnp.sqrt(jnp.sum(w * w, axis=-1, keepdims=True) + L2_EPS)


def path_logits(
    q: jax.Array, k: jax.Array, w: jax.Array, beta: jax.Array, q_slots: jax.Array
) -> jax.Array:
    """q_iᵀ H_i ⋯ H_{j+1} k_j (unscaled) for every query slot i and key slot j <= i, with
    H_t = I − β_t w_t w_tᵀ: q [batch, q_len, heads, d], k and w [batch, k_len, heads, d],
    β [batch, k_len, heads], query slots [batch or 1, q_len] -> [batch, heads, q_len, k_len]
    float32 (entries with j > i are 0, to be masked)."""
    queries = q.astype(jnp.float32).transpose(0, 2, 1, 3)  # [batch, heads, q_len, d]
    slots = q_slots[:, None, :, None]
    # Step j applies H_{j+1}: shift w and β one slot left; past the last slot, β = 0 (H = I).
    next_w = jnp.pad(w[:, 1:], ((0, 0), (0, 1), (0, 0), (0, 0))).transpose(1, 0, 2, 3)
    next_beta = jnp.pad(beta[:, 1:], ((0, 0), (0, 1), (0, 0))).transpose(1, 0, 2)
    keys = k.astype(jnp.float32).transpose(1, 0, 2, 3)  # [k_len, batch, heads, d]

    def step(u, inputs):
        j, w_next, beta_next, key = inputs  # w_next [batch, heads, d], beta_next [batch, heads]
        along = jnp.einsum("bhqd,bhd->bhq", u, w_next)[..., None]
        transformed = u - beta_next[:, :, None, None] * along * w_next[:, :, None, :]
        u = jnp.where(slots > j, transformed, u)  # only queries after slot j pass H_{j+1}
        u = jnp.where(slots == j, queries, u)
        return u, jnp.einsum("bhqd,bhd->bhq", u, key)

    k_len = k.shape[1]
    _, logits = jax.lax.scan(
        step,
        jnp.zeros_like(queries),
        (jnp.arange(k_len), next_w, next_beta, keys),
        reverse=True,
    )
    return logits.transpose(1, 2, 3, 0)


class PathAttention(PositionalEncoding):
    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        rank: int,
        conv_size: int,
        forget_gate: bool,
        rngs: nnx.Rngs,
    ):
        init = jax.nn.initializers.normal(INIT_STD)
        self.num_heads = num_heads
        self.w_down = nnx.Param(init(rngs.params(), (num_layers, d_model, rank)))
        self.w_up = nnx.Param(init(rngs.params(), (num_layers, rank, d_model)))
        self.w_conv = nnx.Param(init(rngs.params(), (num_layers, conv_size, d_model)))
        self.beta_kernel = nnx.Param(init(rngs.params(), (num_layers, d_model, num_heads)))
        self.beta_bias = nnx.Param(jnp.zeros((num_layers, num_heads)))
        self.gates = ForgetGates(num_layers, d_model, num_heads, rngs) if forget_gate else None

    def slot_features(self, x, layer):
        x = x.astype(jnp.float32)
        beta_logits = x @ self.beta_kernel[layer] + self.beta_bias[layer]
        return PathFeatures(
            projected=x @ self.w_down[layer] @ self.w_up[layer],
            beta=2 * jax.nn.sigmoid(beta_logits),
            log_gates=None if self.gates is None else self.gates(x, layer),
        )

    def attention_logits(self, q, k, context: Context, features: PathFeatures, layer):
        w = householder_vectors(features.projected, self.w_conv[layer], self.num_heads)
        logits = path_logits(q, k, w, features.beta, context.q_slots)
        if features.log_gates is not None:
            logits = logits + forgetting_bias(features.log_gates, context.q_slots)
        return logits / jnp.sqrt(q.shape[-1]).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Path(EncodingSpec):
    name = "path"
    family = "contextual"
    decoder_only_because = (
        "a key reaches a query through the transforms of the slots after it, up to the query; "
        "the reference implementation defines only this causal form."
    )
    rank: int = 32  # the low-rank projection to w (the reference's use_low_rank_w)
    conv_size: int = 3  # the short convolution on w (the reference's conv_size)
    forget_gate: bool = False  # PaTH-FoX: add FoX's forget-gate bias

    def validate(self, model) -> None:
        super().validate(model)
        require_at_least("encoding.rank", self.rank, 1)
        require_at_least("encoding.conv_size", self.conv_size, 1)

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return PathAttention(
            model.num_layers,
            model.d_model,
            model.num_heads,
            self.rank,
            self.conv_size,
            self.forget_gate,
            rngs,
        )
