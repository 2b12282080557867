"""RoPE context extension: rules that change RoPE's frequencies to reach past the trained length.

Notation: d = head_dim, θ_i = base^(-2i/d) for i = 0 .. d/2-1 (RoFormer), s = `scale` (the
factor new length / trained length), L = `original_max_len` (positions seen in training).

- "none": θ_i unchanged.
- "pi", position interpolation (Chen et al. 2023, "Extending Context Window of Large Language
  Models via Positional Interpolation"): θ_i / s, i.e. RoPE at positions m / s.
- "ntk", NTK-aware scaled RoPE (bloc97 2023, the r/LocalLLaMA post that introduced it): a
  larger base, base' = base · s^(d/(d−2)), so the lowest frequency is interpolated by exactly
  s and the highest is unchanged.
- "dynamic_ntk" (emozilla 2023; HF transformers' `_compute_dynamic_ntk_parameters`): "ntk" with
  the factor that the current sequence length ℓ calls for, s_ℓ = s·ℓ/L − (s − 1) when ℓ > L and
  no scaling otherwise. With the default s = 1, s_ℓ = ℓ/L: nothing changes inside the trained
  length.
- "yarn" (Peng et al. 2023, "YaRN: Efficient Context Window Extension of Large Language Models",
  §3.2–3.4), as the authors' code computes it (jquesnelle/yarn,
  scaled_rope/LlamaYaRNScaledRotaryEmbedding.py; the same as Hugging Face's
  `_compute_yarn_parameters`): pair i turns r_i = L·θ_i/(2π) times over the trained length.
  The pair index at which a pair turns r times is d·ln(L/(2π·r)) / (2·ln base); the correction
  range runs from low = floor(that at r = β = 32) to high = ceil(that at r = α = 1), clamped to
  [0, d − 1]. With the ramp γ_i = clip((i − low)/(high − low), 0, 1), linear in the pair index,

      θ'_i = (1 − γ_i) · θ_i + γ_i · θ_i / s,

  so pairs up to `low` (fast ones, many turns) keep θ_i and pairs from `high` on are
  interpolated as in PI. Worked example, the README's run (d = 16, base 10^4, L = 17, s = 4):
  low = 0, high = 1, so θ'_0 = θ_0 and every other pair is θ_i / 4.
  YaRN also sharpens attention: logits are divided by t with √(1/t) = 0.1·ln(s) + 1
  (`yarn_attention_factor`), applied by multiplying the rotated queries and keys by that
  factor, as the authors' code scales cos and sin.
- "yarn_paper": the ramp as the paper writes it (§3.2), linear in the number of turns:
  γ(r) = clip((r − α)/(β − α), 0, 1) and θ'_i = (1 − γ(r_i)) · θ_i / s + γ(r_i) · θ_i. It agrees
  with "yarn" only at the ends of the range: at the run above it shrinks the fastest pair to
  0.29·θ_0, where the authors' code keeps it. Same attention factor.

Shapes: frequencies [d/2], or [batch, d/2] for "dynamic_ntk" given per-example lengths [batch].
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from posenc_jax.errors import ConfigError, require_at_least, require_int

SCALINGS = ("none", "pi", "ntk", "dynamic_ntk", "yarn", "yarn_paper")
YARN_RULES = ("yarn", "yarn_paper")  # the rules that also sharpen attention
YARN_ALPHA = 1.0  # below α turns over the trained length: interpolate (Peng et al. 2023, §3.2)
YARN_BETA = 32.0  # above β turns: leave unchanged


def rope_frequencies(
    head_dim: int,
    base: float = 10000.0,
    scaling: str | None = None,
    scale: float = 1.0,
    original_max_len: int | None = None,
    length: jax.Array | int | None = None,
) -> jax.Array:
    """The inverse frequencies θ'_i after `scaling`: [head_dim // 2] float32.

    `length` is the current sequence length, used by "dynamic_ntk" only (an int, or per-example
    lengths [batch], which give [batch, head_dim // 2]); without it "dynamic_ntk" does not scale.
    "yarn", "yarn_paper" and "dynamic_ntk" need `original_max_len`.
    """
    scaling = check_scaling(scaling or "none", scale, original_max_len)
    exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim  # 2i/d
    theta = base**-exponents
    if scaling == "pi":
        return theta / scale
    if scaling == "ntk":
        return _ntk_base(base, scale, head_dim) ** -exponents
    if scaling == "dynamic_ntk":
        assert original_max_len is not None  # check_scaling guarantees it
        if length is None:
            return theta
        length = jnp.asarray(length, jnp.float32)
        factor = jnp.maximum(scale * length / original_max_len - (scale - 1.0), 1.0)
        return _ntk_base(base, factor[..., None], head_dim) ** -exponents
    if scaling == "yarn":
        assert original_max_len is not None  # check_scaling guarantees it
        low, high = yarn_correction_range(head_dim, base, original_max_len)
        ramp = jnp.clip((jnp.arange(head_dim // 2) - low) / (high - low), 0.0, 1.0)
        return (1.0 - ramp) * theta + ramp * theta / scale
    if scaling == "yarn_paper":
        assert original_max_len is not None  # check_scaling guarantees it
        turns = original_max_len * theta / (2 * math.pi)  # r_i = L / λ_i
        ramp = jnp.clip((turns - YARN_ALPHA) / (YARN_BETA - YARN_ALPHA), 0.0, 1.0)
        return (1.0 - ramp) * theta / scale + ramp * theta
    return theta


def yarn_correction_range(head_dim: int, base: float, original_max_len: int) -> tuple[int, float]:
    """The authors' find_correction_range: the pair indices (low, high) between which YaRN's
    ramp runs. high is nudged by 0.001 when the two meet, as their linear_ramp_mask does, so the
    ramp never divides by zero."""

    def pair_turning(turns: float) -> float:  # the pair index that turns `turns` times over L
        return head_dim * math.log(original_max_len / (turns * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(pair_turning(YARN_BETA)), 0)
    high = min(math.ceil(pair_turning(YARN_ALPHA)), head_dim - 1)
    return low, high + 0.001 if high == low else high


def yarn_attention_factor(scale: float) -> float:
    """YaRN's √(1/t) = 0.1·ln(s) + 1, the factor on queries and keys (1 for s <= 1)."""
    return 0.1 * math.log(scale) + 1.0 if scale > 1 else 1.0


def check_scaling(scaling: str, scale: float, original_max_len: int | None) -> str:
    """Raise ConfigError unless (scaling, scale, original_max_len) is a rule it can apply."""
    if scaling not in SCALINGS:
        raise ConfigError(
            f"encoding.scaling={scaling!r} is unknown; valid choices are {list(SCALINGS)}."
        )
    require_at_least("encoding.scale", scale, 1.0)
    if not math.isfinite(scale):  # inf passed the bound and turned every frequency to 0 or NaN
        raise ConfigError(f"encoding.scale={scale} must be finite.")
    if scaling == "none" and scale != 1.0:
        raise ConfigError(
            f"encoding.scale={scale} has no effect with encoding.scaling=none; choose a rule "
            f"({list(SCALINGS[1:])}) or leave encoding.scale at 1."
        )
    if scaling in ("dynamic_ntk", *YARN_RULES):
        if original_max_len is None:
            raise ConfigError(
                f"encoding.scaling={scaling} needs the trained length, encoding.original_max_len; "
                f"it is filled in from the task when a run starts."
            )
    if original_max_len is not None:
        require_int("encoding.original_max_len", original_max_len, 1)
    return scaling


def _ntk_base(base: float, factor, head_dim: int):
    """NTK-aware base: base · factor^(d/(d−2))."""
    return base * factor ** (head_dim / (head_dim - 2))
