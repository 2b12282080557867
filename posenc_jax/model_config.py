"""The tiny Transformer's shape: a frozen dataclass that encodings and the model both read.

It lives on its own so that encodings (which build their modules for a model) and the settings
(which hold encodings) import it without importing each other.
"""

from __future__ import annotations

import dataclasses

from posenc_jax.errors import ConfigError, require_positive
from posenc_jax.spec import choice

NORMS = ("pre", "post")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The tiny Transformer. `head_dim = d_model // num_heads`."""

    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    mlp_ratio: int = 4
    causal: bool = False
    norm: str = choice("pre", NORMS)  # "pre" (GPT-2 style) or "post" (Vaswani et al. 2017)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def validate(self) -> None:
        for key in ("d_model", "num_heads", "num_layers", "mlp_ratio"):
            require_positive(f"model.{key}", getattr(self, key))
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"model.d_model={self.d_model} is not divisible by "
                f"model.num_heads={self.num_heads}; "
                f"each head needs d_model / num_heads dimensions. Valid head counts for this "
                f"d_model are {_divisors(self.d_model)}."
            )


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
