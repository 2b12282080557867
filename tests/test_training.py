"""The training loop: deterministic, no retracing, and it actually learns order."""

import re

import jax
import numpy as np
import pytest

from posenc_jax.compilation import CompilationCounter
from posenc_jax.errors import ConfigError
from posenc_jax.evaluate import evaluate
from posenc_jax.length_buckets import passes_per_step, run_buckets
from posenc_jax.train import init_state, make_train_chunk, microbatches, train, training_batches

from helpers import make_settings


def test_train_chunk_compiles_once_and_is_deterministic():
    settings = make_settings("task=reverse")
    graphdef, state, optimizer = init_state(settings)
    chunk = make_train_chunk(settings, graphdef, optimizer, 5)
    losses = []
    with CompilationCounter() as compiled:
        for _ in range(4):
            state, counts = chunk(state)
            losses.append(float(counts.nll / counts.scored))
    assert compiled.count == 1
    assert int(state.step) == 20

    _, again, _ = init_state(settings)
    for _ in range(4):
        again, _ = chunk(again)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(again.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_chunk_size_does_not_change_the_result():
    """The data of step t depends only on (seed, t), not on how steps are grouped."""
    one = train(make_settings("train.steps_per_dispatch=1", "train.log_every=10"), lambda *_: None)
    five = train(make_settings("train.steps_per_dispatch=5", "train.log_every=10"), lambda *_: None)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(five.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("buckets", [1, 2])
def test_microbatches_change_the_rounding_only(buckets):
    """A step in passes of at most 5 examples (16 = 5 + 5 + 5 + 1 unbucketed; 8 + 8 with two
    buckets, each as 5 + 3) trains the same model as one pass per bucket, to float rounding."""

    def params_after(*overrides):
        settings = make_settings("task=reverse", f"train.length_buckets={buckets}", *overrides)
        return jax.tree.leaves(train(settings, lambda *_: None).params)

    for a, b in zip(params_after(), params_after("train.microbatch=5"), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_microbatches_cover_the_batch_in_order():
    settings = make_settings("task=reverse")
    _, state, _ = init_state(settings)
    (batch,) = training_batches(settings, state.data_key, np.int32(3))
    parts = microbatches(batch, 5)
    assert [part.inputs.shape[0] for part in parts] == [5, 5, 5, 1]
    for name in ("inputs", "positions", "token_mask", "targets", "target_mask"):
        joined = np.concatenate([getattr(part, name) for part in parts])
        np.testing.assert_array_equal(joined, getattr(batch, name))
    assert microbatches(batch, None) == [batch] and microbatches(batch, 16) == [batch]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "train.microbatch=0 must be an integer >= 1"),
        ("-2", "train.microbatch=-2 must be an integer >= 1"),
        ("2.5", "microbatch=2.5 in section 'train' has the wrong type: expected int or null"),
        ("true", "microbatch=True in section 'train' has the wrong type: expected int or null"),
    ],
)
def test_a_bad_microbatch_is_refused(value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_settings(f"train.microbatch={value}")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["train.batch_size=64", "train.microbatch=1"],
            "train.microbatch=1 cuts every training step into 64 passes (train.batch_size=64 in "
            "1 length bucket(s)); each is compiled on its own, so compilation grows with their "
            "number (the default job: 2.4 s as one pass, 21.6 s as 32, 198 s as 128). At most 32 "
            "are allowed: choose train.microbatch >= 2, or leave it unset (null)",
        ),
        # Buckets of 11, 11, 21 and 21 examples: slices of 2 make 6 + 6 + 11 + 11 = 34 passes,
        # slices of 3 make 22.
        (
            ["train.batch_size=64", "train.length_buckets=4", "train.microbatch=2"],
            "into 34 passes (train.batch_size=64 in 4 length bucket(s)); each is compiled on its "
            "own, so compilation grows with their number (the default job: 2.4 s as one pass, "
            "21.6 s as 32, 198 s as 128). At most 32 are allowed: choose train.microbatch >= 3",
        ),
    ],
)
def test_more_passes_than_compile_in_reasonable_time_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_settings("task=reverse", *overrides)


def test_a_huge_batch_in_small_slices_is_refused_at_once():
    """The passes are counted, not listed: 10^20 examples in slices of one are refused with
    the smallest slice that fits (10^20 / 32), not an OverflowError or a long wait."""
    with pytest.raises(ConfigError, match=r"choose train.microbatch >= 3125000000000000000,"):
        make_settings("train.batch_size=100000000000000000000", "train.microbatch=1")


def test_thirty_two_passes_are_allowed():
    settings = make_settings("task=reverse", "train.batch_size=64", "train.microbatch=2")
    assert passes_per_step(run_buckets(settings), settings.train.microbatch) == 32


LEARN = [
    "task=word_order",
    "train.steps=600",
    "train.batch_size=64",
    "train.log_every=100",
    "train.steps_per_dispatch=10",
    "optim.warmup_steps=50",
    "model.d_model=64",
    "task.train_max_len=8",
    "eval.max_len=8",
    "eval.examples_per_length=128",
]


def _in_distribution_accuracy(encoding: str) -> float:
    settings = make_settings(*LEARN, f"encoding={encoding}")
    outcome = train(settings, lambda *_: None)
    return evaluate(settings, outcome.graphdef, outcome.params)["acc_id"]


def test_rope_encoder_learns_word_order():
    assert _in_distribution_accuracy("rope") > 0.8


def test_nope_encoder_stays_at_chance_on_word_order():
    assert 0.4 <= _in_distribution_accuracy("nope") <= 0.6
