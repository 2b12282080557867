"""Evaluation in chunks: bounded memory, and exactly the numbers of one big batch."""

import numpy as np
import pytest

from posenc_jax import evaluate as evaluation
from posenc_jax import metrics, outputs
from posenc_jax.evaluate import ATTENTION_ELEMENTS_PER_CHUNK, chunk_size, evaluate
from posenc_jax.report import accuracy_figure, format_table, plt
from posenc_jax.train import init_state

from helpers import make_settings


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
    chunk = chunk_size(examples, heads, length, budget=ATTENTION_ELEMENTS_PER_CHUNK)
    num_chunks = -(-examples // chunk)
    assert chunk == expected
    assert chunk * heads * length**2 <= ATTENTION_ELEMENTS_PER_CHUNK or chunk == 1
    assert num_chunks * chunk - examples < num_chunks  # padding: less than one row per chunk


@pytest.mark.parametrize(("examples", "expected"), [(10, 12), (256, 256), (6, 8)])
def test_chunks_split_evenly_over_a_data_mesh(examples, expected):
    """train.sharding=data splits every chunk over the devices, so a chunk is rounded up to a
    multiple of their number (the padding rows are cut off again): 10 examples on 4 devices run
    as one chunk of 12, not 10 left whole on each device."""
    assert chunk_size(examples, 4, 17, multiple_of=4) == expected
    # 3 examples fit the budget: 4 chunks of 3 become 4 of 4 on 2 devices.
    assert chunk_size(10, 4, 24, budget=3 * 4 * 24**2, multiple_of=2) == 4


def test_a_cpu_evaluates_in_cache_sized_chunks():
    """On a CPU the budget is 2^20 elements: the paper config's longest bucket (8 heads, 200
    slots, 320 000 elements per example) runs 3 examples at a time, not 86."""
    assert evaluation.attention_elements_per_chunk() == evaluation.CPU_ATTENTION_ELEMENTS_PER_CHUNK
    assert chunk_size(256, 8, 200) == 3
    assert chunk_size(256, 8, 200, budget=ATTENTION_ELEMENTS_PER_CHUNK) == 86


def test_chunked_evaluation_gives_the_same_numbers(monkeypatch):
    # Untrained parameters are fine: the check is that chunking changes nothing.
    settings = make_settings("encoding=alibi", "task=reverse", "eval.examples_per_length=10")
    graphdef, state, _ = init_state(settings)
    whole = evaluate(settings, graphdef, state.params)
    assert chunk_size(10, 4, 2 * 12) == 10  # the CPU's budget runs these in one chunk
    # 24 slots × 4 heads × 24² = 2304 elements per example: a budget of 3 examples, so 4 chunks
    # of 3.
    monkeypatch.setattr(evaluation, "CPU_ATTENTION_ELEMENTS_PER_CHUNK", 3 * 4 * 24**2)
    assert evaluation.chunk_size(10, 4, 24) == 3
    chunked = evaluate(settings, graphdef, state.params)
    for key in ("token_acc", "seq_acc", "acc_id", "acc_ood"):
        assert chunked[key] == whole[key]


def test_a_metric_declared_once_reaches_results_tensorboard_table_and_plot(monkeypatch):
    """Adding a per-length metric is one entry in metrics.PER_LENGTH: evaluation, the scalars
    for TensorBoard and metrics.jsonl, the table and the plot all pick it up by themselves."""
    loss = metrics.LengthMetric("loss", "loss per answer", "loss", "loss", "nll", "scored")
    monkeypatch.setattr(metrics, "PER_LENGTH", (*metrics.PER_LENGTH, loss))
    settings = make_settings("encoding=alibi", "task=reverse", "eval.examples_per_length=4")
    graphdef, state, _ = init_state(settings)
    result = evaluate(settings, graphdef, state.params)
    assert len(result["loss"]) == len(result["lengths"]) and result["loss"][0] > 0
    assert result["loss_id"] == pytest.approx(np.mean(result["loss"][:6]))  # lengths 1..6
    scalars = outputs.eval_scalars(result, "eval")
    assert outputs.length_series(result, "eval")["eval/loss_by_length"][-1] == (
        12,
        result["loss"][-1],
    )
    assert scalars["eval/loss_ood"] == result["loss_ood"]
    assert scalars["eval/loss_ood_representable"] == result["loss_ood_representable"]
    table = format_table(result)
    assert " loss" in table.splitlines()[0] and f"loss_ood {result['loss_ood']:5.3f}" in table
    figure = accuracy_figure(result)
    assert "loss per answer" in [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    plt.close(figure)


def test_progress_reports_each_run_length_once_in_order_with_its_bucket_work():
    # A 16-row table represents inputs up to length 15 (plus the answer slot): 16..20 do not run.
    settings = make_settings("encoding=learned", "encoding.table_size=16", "eval.max_len=20")
    graphdef, state, _ = init_state(settings)
    reported = []
    result = evaluate(settings, graphdef, state.params, on_progress=reported.append)
    assert reported == evaluation.representable_lengths(settings) == list(range(2, 16))
    assert result["not_representable"] == [16, 17, 18, 19, 20]
    # Buckets 6, 12, 20 (word_order: one answer slot): the work is the padded slots.
    work = evaluation.length_work(settings)
    assert list(work) == reported  # the lengths that run, and only those
    assert [work[n] for n in (2, 6, 7, 12, 13)] == [7, 7, 13, 13, 21]
