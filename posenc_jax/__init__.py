"""posenc-jax: how positional encodings shape what small Transformers learn, and how far past
their training length they keep working."""

__version__ = "0.1.0"
