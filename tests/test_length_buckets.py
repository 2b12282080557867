"""Length buckets (train.length_buckets): every step holds every bucket's share of examples, so
each length is as likely as without buckets; each group is padded only to its bucket, the loss
is independent of that padding, and the run is still a pure function of (settings, seed)
whatever the chunking."""

import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from posenc_jax import metrics
from posenc_jax.errors import ConfigError
from posenc_jax.length_buckets import (
    MAX_PASSES_PER_STEP,
    pass_sizes,
    passes_per_step,
    run_buckets,
    smallest_microbatch,
    training_buckets,
)
from posenc_jax.positions import position_scheme
from posenc_jax.train import init_state, train, training_batches

from helpers import make_settings


@given(
    min_len=st.integers(1, 50),
    num_lengths=st.integers(1, 80),
    batch_size=st.integers(1, 300),
    data=st.data(),
)
def test_buckets_cut_the_range_and_the_batch_in_proportion(min_len, num_lengths, batch_size, data):
    max_len = min_len + num_lengths - 1
    count = data.draw(st.integers(1, min(num_lengths, batch_size)))
    buckets = training_buckets(min_len, max_len, count, batch_size)
    assert len(buckets) == count
    assert buckets[0].min_len == min_len and buckets[-1].max_len == max_len
    for before, after in zip(buckets, buckets[1:], strict=False):
        assert after.min_len == before.max_len + 1
    sizes = [bucket.num_lengths for bucket in buckets]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes)
    # Every bucket gets examples, all of the batch is shared out, each share within one example
    # of its exact proportion.
    assert sum(bucket.examples for bucket in buckets) == batch_size
    for bucket in buckets:
        assert bucket.examples >= 1
        assert abs(bucket.examples - batch_size * bucket.num_lengths / num_lengths) < 1


def test_the_paper_range_in_four_buckets():
    assert training_buckets(1, 40, 4, 128) == [
        (1, 10, 32),
        (11, 20, 32),
        (21, 30, 32),
        (31, 40, 32),
    ]
    # 15 lengths: exact shares 25.6 and 3 × 34.13; the largest remainder (0.6) gets the spare.
    assert training_buckets(2, 16, 4, 128) == [(2, 4, 26), (5, 8, 34), (9, 12, 34), (13, 16, 34)]
    assert training_buckets(3, 9, 1, 5) == [(3, 9, 5)]


@given(
    num_lengths=st.integers(1, 80),
    batch_size=st.integers(1, 5000),
    data=st.data(),
)
def test_the_smallest_microbatch_that_fits_is_the_smallest(num_lengths, batch_size, data):
    count = data.draw(st.integers(1, min(num_lengths, batch_size, MAX_PASSES_PER_STEP)))
    buckets = training_buckets(1, num_lengths, count, batch_size)
    smallest = smallest_microbatch(buckets)
    assert passes_per_step(buckets, smallest) <= MAX_PASSES_PER_STEP
    assert smallest == 1 or passes_per_step(buckets, smallest - 1) > MAX_PASSES_PER_STEP
    assert passes_per_step(buckets, smallest) == len(pass_sizes(buckets, smallest))


@pytest.mark.parametrize(("count", "batch_size"), [(0, 16), (8, 16), (4, 3)])
def test_more_buckets_than_lengths_or_examples_is_an_error(count, batch_size):
    with pytest.raises(ValueError, match=f"into {count} buckets"):
        training_buckets(3, 9, count, batch_size)


def test_every_length_is_as_likely_as_without_buckets():
    """Lengths 1..10 in buckets of 3, 3 and 4 lengths (unequal on purpose) holding 6, 6 and 8
    of a step's 20 examples: over 400 steps each length is 1/10 of the examples (chi-squared
    test on the lengths the batches really hold)."""
    settings = make_settings(
        "task=reverse",
        "task.train_min_len=1",
        "task.train_max_len=10",
        "train.batch_size=20",
        "train.length_buckets=3",
    )
    _, state, _ = init_state(settings)

    def step_lengths(step):
        # reverse scores the n answers of an example of length n
        return jnp.concatenate(
            [
                batch.target_mask.sum(axis=1)
                for batch in training_batches(settings, state.data_key, step)
            ]
        )

    steps = 400
    lengths = np.asarray(jax.jit(jax.vmap(step_lengths))(jnp.arange(steps))).ravel()
    counts = collections.Counter(lengths.tolist())
    assert set(counts) == set(range(1, 11))
    expected = steps * 20 / 10
    chi2 = sum((counts[n] - expected) ** 2 / expected for n in range(1, 11))
    assert chi2 < 27.9  # the 0.1% critical value with 9 degrees of freedom


@pytest.mark.parametrize(("batch_size", "count"), [(5, 5), (15, 3)])
def test_word_order_classes_stay_balanced_at_every_length(batch_size, count):
    """word_order alternates its labels within each generated batch. With buckets a step is
    several batches, here of odd size (1 example each, or 5): over 400 steps each length still
    holds as many canonical as swapped sentences (chi-squared test, 9 lengths). Before the
    first label was drawn from the key, every group started at class 0: batch 5 in 5 buckets
    trained on class 0 only."""
    settings = make_settings(
        "task=word_order",
        "task.train_min_len=2",
        "task.train_max_len=10",
        f"train.batch_size={batch_size}",
        f"train.length_buckets={count}",
    )
    _, state, _ = init_state(settings)

    def step_labels(step):
        batches = training_batches(settings, state.data_key, step)
        labels = [jnp.where(b.target_mask, b.targets, 0).sum(axis=1) for b in batches]
        return jnp.concatenate([b.lengths for b in batches]), jnp.concatenate(labels)

    lengths, labels = (
        np.asarray(a).ravel() for a in jax.jit(jax.vmap(step_labels))(np.arange(400))
    )
    assert set(np.unique(labels).tolist()) == {0, 1}
    chi2 = 0.0
    for n in range(2, 11):
        at_n = labels[lengths == n]
        chi2 += (at_n.sum() - at_n.size / 2) ** 2 / (at_n.size / 4)
    assert chi2 < 27.9  # the 0.1% critical value with 9 degrees of freedom


@pytest.mark.parametrize(
    "overrides",
    [
        ("task=reverse", "encoding=t5"),
        ("task=reverse", "encoding=fire", "model.causal=true"),
        ("task=word_order", "encoding=rope", "encoding.randomized=true"),
    ],
)
def test_a_bucketed_step_computes_what_the_fully_padded_step_computes(overrides):
    """A step whose examples are cut into two buckets, padded to lengths 4 and 8, has the same
    examples, loss and gradient as the same examples padded to train_max_len in one batch:
    buckets save work, they change no number."""
    settings = make_settings(*overrides, "task.train_max_len=8", "train.length_buckets=2")
    graphdef, state, _ = init_state(settings)
    buckets = training_batches(settings, state.data_key, np.int32(7))
    assert [batch.inputs.shape for batch in buckets] == [
        (bucket.examples, settings.task.sequence_len(bucket.max_len))
        for bucket in run_buckets(settings)
    ]
    assert [bucket.max_len for bucket in run_buckets(settings)] == [4, 8]

    def loss_and_grads(batches):
        def loss(params):
            model = nnx.merge(graphdef, params)
            totals = [
                metrics.total(metrics.count(model(b.inputs, b.positions, b.token_mask), b))
                for b in batches
            ]
            return sum(t.nll for t in totals) / sum(t.scored for t in totals)

        return jax.value_and_grad(loss)(state.params)

    padded = _padded_like(settings, buckets, state.data_key, 7)
    loss_short, grads_short = loss_and_grads(buckets)
    loss_padded, grads_padded = loss_and_grads([padded])
    np.testing.assert_allclose(loss_short, loss_padded, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_short), jax.tree.leaves(grads_padded), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def _padded_like(settings, buckets, data_key, step):
    """The examples of the bucketed `buckets`, drawn again with the same keys but padded to
    train_max_len, in one batch."""
    task = settings.task
    step_key = jax.random.fold_in(data_key, step)
    padded = []
    for index, (short, bucket) in enumerate(zip(buckets, run_buckets(settings), strict=True)):
        key = jax.random.fold_in(step_key, index)
        length_key, sample_key = jax.random.split(key)
        lengths = task.sample_lengths(length_key, bucket.examples, bucket.min_len, bucket.max_len)
        batch = task.sample(sample_key, lengths, task.train_max_len, settings.model.causal)
        batch = position_scheme(settings, key, batch, training=True)
        width = short.inputs.shape[1]
        for name in ("inputs", "positions", "token_mask", "targets", "target_mask"):
            kept, cut = getattr(batch, name)[:, :width], getattr(batch, name)[:, width:]
            np.testing.assert_array_equal(kept, getattr(short, name), err_msg=name)
            if name in ("token_mask", "target_mask"):
                assert not cut.any(), f"{name}: real slots past the bucket's width"
        padded.append(batch)
    return jax.tree.map(lambda *parts: jnp.concatenate(parts), *padded)


def test_chunking_does_not_change_a_bucketed_run():
    def params_after(steps_per_dispatch):
        settings = make_settings(
            "task=reverse",
            "train.length_buckets=3",
            f"train.steps_per_dispatch={steps_per_dispatch}",
            "train.log_every=10",
        )
        return jax.tree.leaves(train(settings, lambda *_: None).params)

    for a, b in zip(params_after(1), params_after(5), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["train.length_buckets=0"],
            "train.length_buckets=0 cannot cut the 6 training length(s) (task.train_min_len=1 "
            "to task.train_max_len=6) and the train.batch_size=16 examples of a step into that "
            "many non-empty buckets, each a pass compiled on its own (at most 32 a step); choose "
            "an integer from 1 to 6.",
        ),
        (["train.length_buckets=1.5"], "length_buckets=1.5 in section 'train' has the wrong type"),
        (
            ["task.train_min_len=3", "task.train_max_len=6", "train.length_buckets=5"],
            "train.length_buckets=5 cannot cut the 4 training length(s)",
        ),
        (
            ["train.batch_size=3", "train.length_buckets=4"],
            "the train.batch_size=3 examples of a step into that many non-empty buckets, each a "
            "pass compiled on its own (at most 32 a step); choose an integer from 1 to 3.",
        ),
        (
            ["task.train_min_len=6", "train.length_buckets=2"],
            "(at most 32 a step); choose 1 (one bucket).",
        ),
        (
            ["task.train_max_len=40", "train.batch_size=64", "train.length_buckets=33"],
            "train.length_buckets=33 cannot cut the 40 training length(s) (task.train_min_len=1 "
            "to task.train_max_len=40) and the train.batch_size=64 examples of a step into that "
            "many non-empty buckets, each a pass compiled on its own (at most 32 a step); choose "
            "an integer from 1 to 32.",
        ),
    ],
)
def test_bad_bucket_counts_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_settings("task=reverse", *overrides)
