"""A per-layer pattern of encodings: each attention layer uses its own encoding, e.g.

    encoding=hybrid 'encoding.layers=[rope,rope,rope,nope]'

for RoPE in three layers and NoPE in the fourth, the interleaving of recent long-context models
(Yang et al. 2025, "Rope to Nope and Back Again: A New Hybrid Attention Strategy", which pairs
RoPE layers with NoPE layers 3:1). An entry is an encoding's name, with its default
parameters, or a mapping with its parameters: `'encoding.layers=[{name: rope, base: 500},
nope]'`.

Each distinct entry is built once, for the layers that use it, and numbered within them: a
KERPLE or FIRE entry used by two layers has per-layer parameters for those two, and the model
passes every hook the layer's own encoding and index. The model does not know it is a hybrid.

Only encodings that act inside attention can be mixed per layer: absolute encodings (sinusoidal,
learned, Abacus, position coupling) add to the input once, before any layer, and are refused.
A hybrid does not randomize positions (its entries could not agree on a range), and an entry
that needs a decoder (FoX, stick-breaking, PaTH) needs one here too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from flax import nnx

from posenc_jax.encodings.base import Context, EncodingSpec, PositionalEncoding
from posenc_jax.encodings.nope import NoPE
from posenc_jax.encodings.rope import Rope
from posenc_jax.errors import ConfigError
from posenc_jax.model_config import ModelConfig
from posenc_jax.spec import parsed

# What a hybrid's layers say they see, strongest claim first: a mix is relative if any layer is
# (then shifting positions changes nothing, as no layer reads them absolutely).
FAMILY_ORDER = ("relative", "contextual", "none")


def layer_specs(setting: str, value: Any) -> tuple[EncodingSpec, ...]:
    """`encoding.layers` as specs: a non-empty list of names or {name: ..., params} mappings."""
    from posenc_jax.encodings import make_encoding  # the registry imports this module

    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(
            f"{setting} must be a non-empty list with one encoding per layer, e.g. "
            f"'encoding.layers=[rope,rope,rope,nope]'."
        )
    specs = []
    for index, entry in enumerate(value):
        raw = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"{setting}: entry {index} ({entry!r}) is neither an encoding's name nor a "
                f"mapping with a `name`."
            )
        if "name" not in raw:
            raise ConfigError(
                f"{setting}: entry {index} ({entry!r}) has no `name`; write {{name: rope, ...}}."
            )
        if raw.get("name") == "hybrid":
            raise ConfigError(f"{setting}: entry {index} is a hybrid; hybrids do not nest.")
        try:
            specs.append(make_encoding(raw))
        except ConfigError as error:
            raise ConfigError(f"{setting}: entry {index}: {error}") from None
    return tuple(specs)


class LayerPattern(PositionalEncoding):
    """Routes every hook to the layer's own encoding, with the layer's index among its users."""

    def __init__(self, parts: list[PositionalEncoding], routes: tuple[tuple[int, int], ...]):
        self.parts = nnx.List(parts)
        self.routes = routes  # layer -> (part, index within the part's layers); static

    def _at(self, layer: int) -> tuple[PositionalEncoding, int]:
        part, local = self.routes[layer]
        return self.parts[part], local

    def slot_features(self, x, layer):
        part, local = self._at(layer)
        return part.slot_features(x, local)

    def rotate_qk(self, q, k, q_positions, k_positions, layer):
        part, local = self._at(layer)
        return part.rotate_qk(q, k, q_positions, k_positions, local)

    def attention_logits(self, q, k, context: Context, features, layer):
        part, local = self._at(layer)
        return part.attention_logits(q, k, context, features, local)

    def logit_bias(self, q_positions, k_positions, layer):
        part, local = self._at(layer)
        return part.logit_bias(q_positions, k_positions, local)

    def normalise(self, logits, context: Context, layer):
        part, local = self._at(layer)
        return part.normalise(logits, context, local)

    def attention_output(self, weights, v, q_positions, k_positions, layer):
        part, local = self._at(layer)
        return part.attention_output(weights, v, q_positions, k_positions, local)

    def project_parameters(self) -> None:
        for part in self.parts:
            part.project_parameters()


@dataclasses.dataclass(frozen=True)
class Hybrid(EncodingSpec):
    name = "hybrid"
    # The default model's two layers: RoPE, then NoPE.
    layers: tuple[EncodingSpec, ...] = parsed((Rope(), NoPE()), layer_specs)

    @property
    def family(self) -> str:  # type: ignore[override]  # derived from the layers
        families = {spec.family for spec in self.layers}
        return next((family for family in FAMILY_ORDER if family in families), "none")

    @property
    def num_positions(self) -> int | None:
        limits = [spec.num_positions for spec in self.layers if spec.num_positions is not None]
        return min(limits, default=None)

    def _distinct(self) -> list[EncodingSpec]:
        """The distinct entries, in order of first use."""
        return list(dict.fromkeys(self.layers))

    def _part_model(self, model: ModelConfig, spec: EncodingSpec) -> ModelConfig:
        return dataclasses.replace(model, num_layers=self.layers.count(spec))

    def validate(self, model) -> None:
        super().validate(model)
        if not self.layers:
            raise ConfigError(
                "encoding=hybrid needs encoding.layers, one encoding per layer, e.g. "
                "'encoding.layers=[rope,rope,rope,nope]'."
            )
        if len(self.layers) != model.num_layers:
            raise ConfigError(
                f"encoding.layers has {len(self.layers)} entries "
                f"({[spec.name for spec in self.layers]}) but the model has "
                f"model.num_layers={model.num_layers}; give one encoding per layer."
            )
        if self.randomized:
            raise ConfigError(
                "encoding.randomized=true does not apply to encoding=hybrid; randomize the "
                "positions of a single encoding instead."
            )
        for index, spec in enumerate(self.layers):
            if spec.family == "absolute":
                raise ConfigError(
                    f"encoding.layers entry {index} is {spec.name!r}, an absolute encoding: it "
                    f"adds to the input once, before any layer, so it cannot be chosen per "
                    f"layer. Use encodings that act inside attention (e.g. rope, nope, alibi)."
                )
            if spec.randomized:
                raise ConfigError(
                    f"encoding.layers entry {index} ({spec.name!r}) sets randomized=true; a "
                    f"hybrid's layers share one set of positions, which are not randomized."
                )
        for spec in self._distinct():
            try:
                spec.validate(self._part_model(model, spec))
            except ConfigError as error:
                index = self.layers.index(spec)
                raise ConfigError(
                    f"encoding.layers entry {index} ({spec.name!r}): {error}"
                ) from None

    def with_trained_length(self, trained_positions: int) -> Hybrid:
        layers = tuple(spec.with_trained_length(trained_positions) for spec in self.layers)
        return dataclasses.replace(self, layers=layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layers": [spec.to_dict() for spec in self.layers],
            "randomized": self.randomized,
            "max_position": self.max_position,
        }

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        distinct = self._distinct()
        parts = [spec.build(self._part_model(model, spec), rngs) for spec in distinct]
        routes = tuple(
            (distinct.index(spec), self.layers[:layer].count(spec))
            for layer, spec in enumerate(self.layers)
        )
        return LayerPattern(parts, routes)
