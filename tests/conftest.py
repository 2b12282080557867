"""Session set-up only; the shared helpers live in helpers.py."""

import pytest

from posenc_jax.compilation import enable_persistent_cache


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache():
    enable_persistent_cache()
