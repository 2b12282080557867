"""Length buckets (train.length_buckets): every length as likely as without them, each step padded
only to its bucket, the loss independent of that padding, and the run still a pure function of
(settings, seed) whatever the chunking."""

import collections
import re

import jax
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from posenc_jax import metrics
from posenc_jax.errors import ConfigError
from posenc_jax.length_buckets import LengthBucket, bucket_of_step, training_buckets
from posenc_jax.positions import position_scheme
from posenc_jax.train import (
    init_state,
    make_train_chunk,
    train,
    training_batch,
    unbucketed_scored_per_step,
)

from helpers import make_settings


@given(min_len=st.integers(1, 50), num_lengths=st.integers(1, 80), data=st.data())
def test_buckets_cut_the_range_into_near_equal_contiguous_parts(min_len, num_lengths, data):
    max_len = min_len + num_lengths - 1
    count = data.draw(st.integers(1, num_lengths))
    buckets = training_buckets(min_len, max_len, count)
    assert len(buckets) == count
    assert buckets[0].min_len == min_len and buckets[-1].max_len == max_len
    for before, after in zip(buckets, buckets[1:], strict=False):
        assert after.min_len == before.max_len + 1
    sizes = [bucket.num_lengths for bucket in buckets]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes)


def test_the_paper_range_in_four_buckets():
    assert training_buckets(1, 40, 4) == [(1, 10), (11, 20), (21, 30), (31, 40)]
    assert training_buckets(2, 16, 4) == [(2, 4), (5, 8), (9, 12), (13, 16)]
    assert training_buckets(3, 9, 1) == [(3, 9)]


@pytest.mark.parametrize("count", [0, 8])
def test_more_buckets_than_lengths_is_an_error(count):
    with pytest.raises(ValueError, match=f"into {count} buckets"):
        training_buckets(3, 9, count)


def test_every_length_is_as_likely_as_without_buckets():
    """Bucket k is drawn in proportion to its number of lengths, then a length uniformly inside
    it: over many steps each of the 10 lengths has probability 1/10 (chi-squared test)."""
    buckets = training_buckets(1, 10, 3)  # sizes 3, 3, 4: unequal on purpose
    steps = 20_000
    chosen = np.asarray(jax.vmap(lambda t: bucket_of_step(t, buckets))(np.arange(steps)))
    rng = np.random.default_rng(0)
    lengths = [rng.integers(buckets[k].min_len, buckets[k].max_len + 1) for k in chosen]
    counts = collections.Counter(lengths)
    expected = steps / 10
    chi2 = sum((counts[n] - expected) ** 2 / expected for n in range(1, 11))
    assert chi2 < 27.9  # the 0.1% critical value with 9 degrees of freedom


def test_the_bucket_schedule_depends_on_the_step_alone():
    buckets = training_buckets(1, 40, 4)
    schedule = [int(bucket_of_step(np.int32(t), buckets)) for t in range(64)]
    assert schedule == [int(bucket_of_step(np.int32(t), buckets)) for t in range(64)]
    assert set(schedule) == {0, 1, 2, 3}


@pytest.mark.parametrize(
    "overrides",
    [
        ("task=reverse", "encoding=t5"),
        ("task=reverse", "encoding=fire", "model.causal=true"),
        ("task=word_order", "encoding=rope", "encoding.randomized=true"),
    ],
)
def test_a_bucket_step_computes_what_the_fully_padded_step_computes(overrides):
    """A step on lengths 3..4 padded to its bucket (4) has the same examples, loss and gradient
    as the same lengths padded to train_max_len: buckets save work, they change no number."""
    settings = make_settings(*overrides, "task.train_max_len=8")
    graphdef, state, optimizer = init_state(settings)
    bucket = LengthBucket(3, 4)
    short = training_batch(settings, state.data_key, np.int32(7), bucket)
    assert short.inputs.shape[1] == settings.task.sequence_len(4)

    def loss_and_grads(batch):
        def loss(params):
            model = nnx.merge(graphdef, params)
            counts = metrics.count(model(batch.inputs, batch.positions, batch.token_mask), batch)
            return counts.nll.sum() / counts.scored.sum()

        return jax.value_and_grad(loss)(state.params)

    padded = _padded_like(settings, short, state.data_key, 7, bucket)
    (loss_short, grads_short), (loss_padded, grads_padded) = map(loss_and_grads, (short, padded))
    np.testing.assert_allclose(loss_short, loss_padded, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_short), jax.tree.leaves(grads_padded), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def _padded_like(settings, short, data_key, step, bucket):
    """The examples of `short`, drawn again with the same keys but padded to train_max_len."""
    task = settings.task
    step_key = jax.random.fold_in(data_key, step)
    length_key, sample_key = jax.random.split(step_key)
    lengths = task.sample_lengths(
        length_key, settings.train.batch_size, bucket.min_len, bucket.max_len
    )
    batch = task.sample(sample_key, lengths, task.train_max_len, settings.model.causal)
    batch = position_scheme(settings.encoding, step_key, batch)
    width = short.inputs.shape[1]
    for name in ("inputs", "positions", "token_mask", "targets", "target_mask"):
        kept, cut = getattr(batch, name)[:, :width], getattr(batch, name)[:, width:]
        np.testing.assert_array_equal(kept, getattr(short, name), err_msg=name)
        if name in ("token_mask", "target_mask"):
            assert not cut.any(), f"{name}: real slots past the bucket's width"
    return batch


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # reverse scores all n answers of an example of length n: 16 × mean(1..6).
        (("task=reverse",), 16 * 3.5),
        (("task=reverse", "task.train_min_len=3", "model.causal=true"), 16 * 4.5),
        # A classification scores one slot per example, whatever its length.
        (("task=word_order", "task.train_min_len=2"), 16.0),
    ],
)
def test_a_bucketed_step_is_normalised_by_an_unbucketed_steps_token_count(overrides, expected):
    """What a bucketed step's summed loss is divided by: the scored slots of an average
    unbucketed step (batch 16, lengths up to 6), so that short and long buckets weigh each
    token as an unbucketed batch does."""
    assert unbucketed_scored_per_step(make_settings(*overrides)) == pytest.approx(expected)


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


def test_vmapped_seeds_take_one_branch_not_every_bucket():
    """Under vmap the bucket index stays unbatched, so the switch stays a conditional (a
    batched index would turn it into a select that computes all buckets)."""
    settings = make_settings("task=reverse", "train.length_buckets=3", "train.num_seeds=2")
    graphdef, state, optimizer = init_state(settings)
    chunk = make_train_chunk(settings, graphdef, optimizer, 2)
    assert "cond[" in str(jax.make_jaxpr(chunk)(state))
    state, counts = chunk(state)
    assert state.step.tolist() == [2, 2] and np.isfinite(counts.nll).all()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.length_buckets=0"], "train.length_buckets=0 must be an integer >= 1"),
        (["train.length_buckets=1.5"], "length_buckets=1.5 in section 'train' has the wrong type"),
        (
            ["task.train_min_len=3", "task.train_max_len=6", "train.length_buckets=5"],
            "train.length_buckets=5 is more buckets than the 4 training length(s)",
        ),
    ],
)
def test_bad_bucket_counts_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_settings("task=reverse", *overrides)
