"""NoPE: no positional encoding at all (Kazemnejad et al. 2023, "The Impact of Positional
Encoding on Length Generalization in Transformers").

Every hook is the identity. In an encoder the model is then permutation-equivariant: it cannot
tell word orders apart. A causal mask breaks that symmetry, so a NoPE decoder can still infer
positions (it can count how many tokens it attends to).
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding


@dataclasses.dataclass(frozen=True)
class NoPE(EncodingSpec):
    name = "nope"
    family = "none"

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return PositionalEncoding()
