"""`posenc-inspect`: pictures of what an encoding does to positions, without training.

    posenc-inspect encoding=rope length=128 trained_len=32

writes into `out_dir` (default inspect/<encoding>/):

- similarity.png: how alike positions 0 .. length-1 look to the model, S[i, j]:
  - absolute encodings (sinusoidal, learned): dot products of the position vectors, p_i · p_j;
  - all others: the attention logit of query i and key j at fixed content (every query and key
    the all-ones vector), through the encoding's own hooks: a logit bias (ALiBi, T5, KERPLE,
    FIRE), a rotation (RoPE, xPos) or a content-dependent term (Shaw, DeBERTa, Transformer-XL,
    CoPE). One panel per head where heads differ.
  Parameters are the encoding's initialisation (seed 0); learned ones are therefore untrained.
- for RoPE and xPos, decay.png: RoFormer's long-range decay (Su et al. 2021, §3.4.3), the bound
  (1/(d/2)) Σ_{j=1}^{d/2} |Σ_{k<j} e^{i·r·θ_k}| on |q·k| against the relative distance r;
- for RoPE and xPos, scaling.png: the same bound and the fixed-content logit under each context
  extension rule (none, pi, ntk, dynamic_ntk, yarn, yarn_paper), extending `trained_len` to `length`
  (s = length / trained_len);
- summary.txt: the numbers behind the pictures, also printed: mean S at distances 0, 1,
  length/8 and length/2 (neighbouring positions look alike, distant ones differ), and for rotary
  encodings the shortest and longest wavelength under each rule.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from posenc_jax.encodings import REGISTRY as ENCODINGS
from posenc_jax.encodings import (
    SCALINGS,
    EncodingSpec,
    PositionalEncoding,
    Rope,
    available,
    make_encoding,
)
from posenc_jax.encodings.base import Context, attention_scores
from posenc_jax.errors import ConfigError, require_at_least, require_int, require_seed
from posenc_jax.model import attention_mask
from posenc_jax.model_config import ModelConfig
from posenc_jax.report import plt
from posenc_jax.spec import construct


@dataclasses.dataclass(frozen=True)
class InspectOptions:
    """posenc-inspect's own settings (configs/inspect.yaml), type-checked by `spec.construct`."""

    length: int  # positions 0 .. length-1
    trained_len: int  # the length RoPE's scaling pictures extend from
    seed: int  # initialisation of learned encoding parameters
    out_dir: str


# Layers of the model that `build_encoding` builds an encoding for by default.
LAYERS_ALONE = 2


def build_encoding(
    name: str,
    *,
    num_heads: int = 2,
    d_model: int | None = None,
    num_layers: int = LAYERS_ALONE,
    causal: bool = False,
    seed: int = 0,
    **params: Any,
) -> PositionalEncoding:
    """Encoding `name` on its own (no Transformer), with `params` and parameters initialised from
    `seed`, built for a model of `num_heads` heads (d_model defaults to 2 per head), `num_layers`
    layers and the given mask. Raises ConfigError for an unknown name, parameter or bad value."""
    require_int("num_heads", num_heads, 1)
    require_seed("seed", seed)
    spec = make_encoding({"name": name, **params})
    shape = {
        "d_model": 2 * num_heads if d_model is None else d_model,
        "num_heads": num_heads,
        "num_layers": num_layers,
        "causal": causal,
    }
    model = construct(ModelConfig, shape, "build_encoding's arguments")  # checks the types
    model.validate()
    spec.validate(model)
    return spec.build(model, nnx.Rngs(seed))


def attention_bias(
    name: str,
    q_len: int,
    k_len: int,
    num_heads: int,
    causal: bool = False,
    seed: int = 0,
    layer: int = 0,
    num_layers: int = LAYERS_ALONE,
    **params: Any,
) -> jax.Array:
    """The content-independent logit bias of encoding `name`: [num_heads, q_len, k_len].

    Queries sit at positions 0..q_len-1 and keys at 0..k_len-1. A learned bias (t5, kerple,
    fire) is shown at its initialisation from `seed`; per-layer ones (kerple, fire) for `layer`
    of a model with `num_layers` layers. Raises ConfigError for an encoding that declares no
    such bias (`EncodingSpec.adds_logit_bias`), a layer out of range, or a length below 1.
    """
    require_int("q_len", q_len, 1)
    require_int("k_len", k_len, 1)
    require_int("num_layers", num_layers, 1)
    if type(layer) is not int or not 0 <= layer < num_layers:
        # Checked here: JAX would clamp an out-of-range layer index to the last layer.
        raise ConfigError(
            f"layer={layer!r} is out of range; a model of num_layers={num_layers} has layers "
            f"0..{num_layers - 1}."
        )
    # Refused before anything is built; an unknown name is left to build_encoding's error.
    if name in ENCODINGS and not ENCODINGS[name].adds_logit_bias:
        with_bias = [n for n in available() if ENCODINGS[n].adds_logit_bias]
        raise ConfigError(
            f"Encoding {name!r} adds no content-independent bias to the attention logits, so it "
            f"has no attention_bias; the encodings that do are {with_bias}."
        )
    module = build_encoding(
        name, num_heads=num_heads, num_layers=num_layers, causal=causal, seed=seed, **params
    )
    bias = module.logit_bias(jnp.arange(q_len)[None, :], jnp.arange(k_len)[None, :], layer)
    assert bias is not None  # declared by adds_logit_bias, and tested for every encoding
    return bias[0]


def position_similarity(
    spec: EncodingSpec, model: ModelConfig, length: int, seed: int = 0
) -> np.ndarray:
    """S [panels, length, length]: position-vector dot products (absolute encodings, one panel)
    or fixed-content attention logits of layer 0 (every other encoding, one panel per head)."""
    if not spec.represents(length):
        raise ConfigError(
            f"length={length} needs positions up to {length - 1}, but encoding {spec.name!r} "
            f"represents only {spec.num_positions}; choose length <= {spec.num_positions}."
        )
    module = spec.build(model, nnx.Rngs(seed))
    positions = jnp.arange(length)[None]
    if spec.family == "absolute":
        vectors = module.embed(jnp.zeros((1, length, model.d_model)), positions)[0]
        return np.asarray(vectors @ vectors.T)[None]
    content = jnp.ones((1, length, model.num_heads, model.head_dim))
    context = Context(
        positions, positions, attention_mask(jnp.ones((1, length), bool), model.causal), None
    )
    features = module.slot_features(jnp.ones((1, length, model.d_model)), layer=0)
    scores = attention_scores(module, content, content, context, features, layer=0)
    logits = np.asarray(jnp.where(context.mask, scores, jnp.nan)[0])
    same = all(np.allclose(logits[0], head, equal_nan=True) for head in logits[1:])
    return logits[:1] if same else logits


def rope_decay_bound(frequencies: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """RoFormer §3.4.3: (1/(d/2)) Σ_{j=1}^{d/2} |S_j|, S_j = Σ_{k<j} e^{i r θ_k}, per distance r."""
    phases = np.exp(1j * np.outer(distances, frequencies))  # [r, d/2]
    return np.abs(np.cumsum(phases, axis=1)).mean(axis=1)


def mean_at_distance(similarity: np.ndarray, distance: int) -> float:
    """Mean over panels and i of S[i, i + distance] (NaN-free entries only); a negative
    distance looks at keys before the query, the ones a decoder's mask keeps."""
    return float(np.nanmean(np.diagonal(similarity, offset=distance, axis1=1, axis2=2)))


def pictures_for(spec: EncodingSpec) -> list[str]:
    """The picture files `inspect_encoding` writes for this encoding."""
    return ["similarity.png"] + (["decay.png", "scaling.png"] if isinstance(spec, Rope) else [])


def inspect_encoding(
    spec: EncodingSpec,
    model: ModelConfig,
    length: int,
    trained_len: int,
    out_dir: Path,
    seed: int = 0,
) -> str:
    """Write the pictures and summary.txt into out_dir; returns the summary text."""
    require_at_least("length", length, 2)
    require_at_least("trained_len", trained_len, 1)
    require_seed("seed", seed)
    if isinstance(spec, Rope):
        spec = spec.with_trained_length(trained_len)
    spec.validate(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the encoding is valid here
    similarity = position_similarity(spec, model, length, seed)
    absolute = spec.family == "absolute"
    kind = "position-vector dot products" if absolute else "attention logits at fixed content"
    _save(_similarity_figure(similarity, f"{spec.name}: {kind}"), out_dir / "similarity.png")
    distances = sorted({0, 1, length // 8, length // 2})
    # A decoder masks the keys after the query, so its summary looks at keys before it.
    sign, where = (-1, "i-r") if model.causal else (1, "i+r")
    lines = [
        f"encoding {spec.name} ({spec.family}); {kind}, positions 0..{length - 1}, "
        f"{'decoder' if model.causal else 'encoder'} mask, parameters at initialisation (seed "
        f"{seed})",
        f"mean S[i, {where}]: "
        + ", ".join(f"r={r}: {mean_at_distance(similarity, sign * r):.4g}" for r in distances),
    ]
    if isinstance(spec, Rope):
        lines += _rotary_pictures(spec, model, length, trained_len, out_dir)
    summary = "\n".join(lines)
    (out_dir / "summary.txt").write_text(summary + "\n")
    return summary


def _rotary_pictures(
    spec: Rope, model: ModelConfig, length: int, trained_len: int, out_dir: Path
) -> list[str]:
    """decay.png and scaling.png; returns the summary lines on the scaling rules."""
    head_dim, scale = model.head_dim, max(length / trained_len, 1.0)
    distances = np.arange(length)
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    axes.plot(distances, rope_decay_bound(_frequencies_over(spec, head_dim, length), distances))
    axes.set(
        xlabel="relative distance r",
        ylabel="bound on |q·k| (relative)",
        title=f"{spec.name}: long-range decay (RoFormer §3.4.3), d = {head_dim}",
    )
    _save(figure, out_dir / "decay.png")

    figure, (bound_axes, logit_axes) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=100)
    lines = [
        f"scaling rules extending trained_len={trained_len} to length={length} (s = {scale:g}):"
    ]
    # p-RoPE defines no context extension (training refuses it): only its own frequencies.
    rules = ("none",) if spec.fraction < 1 and spec.partial == "p_rope" else SCALINGS
    for rule in rules:
        # dynamic_ntk at its default factor 1 reaches s exactly at `length`, like ntk.
        factor = 1.0 if rule in ("none", "dynamic_ntk") else scale
        variant = dataclasses.replace(
            spec, scaling=rule, scale=factor, original_max_len=trained_len
        )
        frequencies = _frequencies_over(variant, head_dim, length)
        style = "--" if rule == "dynamic_ntk" else "-"  # it lies on ntk at this length
        bound_axes.plot(distances, rope_decay_bound(frequencies, distances), style, label=rule)
        logit_axes.plot(
            distances, position_similarity(variant, model, length)[0, 0], style, label=rule
        )
        wavelengths = 2 * math.pi / frequencies
        lines.append(
            f"  {rule:12s} wavelengths {wavelengths.min():7.2f} .. {wavelengths.max():9.1f} "
            "positions"
        )
    bound_axes.axvline(trained_len, color="0.6", linestyle=":")
    logit_axes.axvline(trained_len, color="0.6", linestyle=":")
    bound_axes.set(xlabel="relative distance r", ylabel="decay bound", title="RoFormer decay bound")
    logit_axes.set(
        xlabel="key position (query at 0)", ylabel="logit", title="fixed-content logit, query 0"
    )
    bound_axes.legend(fontsize="small")
    figure.suptitle(
        f"{spec.name}: context extension from {trained_len} to {length} (dotted: trained length)"
    )
    _save(figure, out_dir / "scaling.png")
    return lines


def _frequencies_over(spec: Rope, head_dim: int, length: int) -> np.ndarray:
    """θ' of the rotated pairs [rotary_dim/2] for one sequence of `length` positions
    (dynamic_ntk depends on it)."""
    frequencies = spec.frequencies(head_dim, jnp.arange(length)[None])
    return np.asarray(frequencies, np.float64).reshape(-1, spec.rotary_dim(head_dim) // 2)[0]


def _similarity_figure(similarity: np.ndarray, title: str):
    panels = similarity.shape[0]
    figure, axes = plt.subplots(
        1, panels, figsize=(3.2 * panels + 0.8, 3.4), dpi=100, squeeze=False
    )
    for panel, axis in enumerate(axes[0]):
        image = axis.imshow(similarity[panel], cmap="viridis", interpolation="nearest")
        axis.set(
            xlabel="position j",
            ylabel="position i" if panel == 0 else None,
            title=f"head {panel}" if panels > 1 else None,
        )
        figure.colorbar(image, ax=axis, fraction=0.046)
    figure.suptitle(title, fontsize="small")
    return figure


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
