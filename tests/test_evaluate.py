"""Evaluation in chunks: bounded memory, and exactly the numbers of one big batch."""

import pytest
from helpers import make_settings

from posenc_jax import evaluate as evaluation
from posenc_jax.evaluate import ATTENTION_ELEMENTS_PER_CHUNK, chunk_size, evaluate
from posenc_jax.train import init_state


@pytest.mark.parametrize(
    "examples, heads, length, expected",
    [
        (256, 4, 17, 256),  # the default evaluation: one chunk
        (256, 4, 257, 86),  # at most 127 fit: 3 even chunks (86 + 86 + 84 rows), not 127 + 127 + 2
        (256, 4, 513, 29),  # at most 31 fit (2^25 / (4 · 513²) = 31.9): 9 even chunks of 29
        (7, 2, 3000, 1),  # not even one example fits the budget: one at a time
        (100, 1, 50, 100),
    ],
)
def test_chunks_respect_the_memory_bound_and_waste_little(examples, heads, length, expected):
    chunk = chunk_size(examples, heads, length)
    num_chunks = -(-examples // chunk)
    assert chunk == expected
    assert chunk * heads * length**2 <= ATTENTION_ELEMENTS_PER_CHUNK or chunk == 1
    assert num_chunks * chunk - examples < num_chunks  # padding: less than one row per chunk


def test_chunked_evaluation_gives_the_same_numbers(monkeypatch):
    # Untrained parameters are fine: the check is that chunking changes nothing.
    settings = make_settings("encoding=alibi", "task=reverse", "eval.examples_per_length=10")
    graphdef, state, _ = init_state(settings)
    whole = evaluate(settings, graphdef, state.params)
    assert chunk_size(10, 4, 2 * 12) == 10  # the default budget runs these in one chunk
    # 24 slots × 4 heads × 24² = 2304 elements per example: a budget of 3 examples, so 4 chunks
    # of 3.
    monkeypatch.setattr(evaluation, "ATTENTION_ELEMENTS_PER_CHUNK", 3 * 4 * 24**2)
    assert evaluation.chunk_size(10, 4, 24) == 3
    chunked = evaluate(settings, graphdef, state.params)
    for key in ("token_acc", "seq_acc", "acc_id", "acc_ood"):
        assert chunked[key] == whole[key]
