"""Randomized positions (Ruoss et al. 2023): training positions are sorted, distinct and in
range; evaluation positions are fixed by the seed; encodings without position ids refuse."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.errors import ConfigError
from posenc_jax.evaluate import eval_batch, evaluate
from posenc_jax.positions import sorted_subset
from posenc_jax.run import run
from posenc_jax.train import init_state, training_batches

from helpers import make_settings

RANDOMIZED = ["encoding.randomized=true", "encoding.max_position=64"]


def _training_batch(settings, step):
    """Step `step`'s training batch, and the same batch without randomized positions."""
    _, state, _ = init_state(settings)
    plain = dataclasses.replace(
        settings, encoding=dataclasses.replace(settings.encoding, randomized=False)
    )
    (plain_batch,) = training_batches(plain, state.data_key, step)
    (batch,) = training_batches(settings, state.data_key, step)
    return plain_batch, batch


@pytest.mark.parametrize("encoding", ["rope", "learned", "alibi"])
def test_training_positions_are_sorted_distinct_and_in_range(encoding):
    settings = make_settings(
        f"encoding={encoding}",
        "task=reverse",
        *RANDOMIZED,
        *(["encoding.table_size=64"] if encoding == "learned" else []),
    )
    for step in range(3):
        plain, batch = _training_batch(settings, step)
        assert (batch.inputs == plain.inputs).all()  # only the positions change
        positions, real = np.asarray(batch.positions), np.asarray(batch.token_mask)
        assert (positions[~real] == 0).all()
        for row, mask in zip(positions, real, strict=True):
            used = row[mask]
            assert (np.diff(used) > 0).all()  # sorted and distinct
            assert used.min() >= 0 and used.max() < 64
        # Not the plain 0..T-1 layout: some example has a gap.
        assert (positions != np.asarray(plain.positions)).any()


def test_training_positions_change_between_steps():
    settings = make_settings("task=reverse", *RANDOMIZED)
    first, second = (_training_batch(settings, step)[1].positions for step in (0, 1))
    assert (np.asarray(first) != np.asarray(second)).any()


def test_evaluation_is_reproducible_and_uses_randomized_positions():
    settings = make_settings("task=copy", *RANDOMIZED)
    graphdef, state, _ = init_state(settings)
    first = evaluate(settings, graphdef, state.params)
    second = evaluate(settings, graphdef, state.params)
    assert first["token_acc"] == second["token_acc"]
    plain = make_settings("task=copy")
    assert evaluate(plain, graphdef, state.params)["token_acc"] != first["token_acc"]


def test_lengths_past_max_position_are_reported_not_run():
    # copy: an input of n tokens occupies 2n positions; 2n <= 20 only up to n = 10.
    settings = make_settings(
        "task=copy", "encoding.randomized=true", "encoding.max_position=20", "eval.max_len=12"
    )
    graphdef, state, _ = init_state(settings)
    results = evaluate(settings, graphdef, state.params)
    assert results["not_representable"] == [11, 12]
    assert results["acc_ood"] is None and results["acc_ood_representable"] is not None


@pytest.mark.parametrize("encoding", ["nope", "cope"])
def test_encodings_without_position_ids_refuse_and_say_why(encoding):
    with pytest.raises(ConfigError, match=r"reads no position ids"):
        make_settings(f"encoding={encoding}", *RANDOMIZED)


def test_learned_table_must_cover_max_position():
    with pytest.raises(
        ConfigError, match=r"encoding.table_size=512 rows.*encoding.table_size=2048"
    ):
        make_settings("encoding=learned", "encoding.randomized=true")


def test_training_longer_than_max_position_is_an_error():
    with pytest.raises(ConfigError, match=r"encoding.max_position"):
        make_settings("task=copy", "encoding.randomized=true", "encoding.max_position=8")


def test_a_randomized_run_completes(tmp_path):
    settings = make_settings("task=reverse", *RANDOMIZED, "train.steps=10", "train.log_every=5")
    results = run(settings, tmp_path, show_progress=False)
    assert results["status"] == "completed"
    assert results["config"]["encoding"]["randomized"] is True


@pytest.mark.parametrize("size", [1, 2, 5])
def test_each_example_gets_a_uniform_subset_of_its_own_size(size):
    """Ruoss et al.: a sorted uniform subset of [0, L) of the example's own size. The largest of
    n distinct uniform draws from {0..L−1} has mean n(L+1)/(n+1) − 1 (1365 for n = 2, L = 2048),
    whatever padded width the example sits in. (The old draw, the first n values of a subset as
    wide as the padded row, gave a length-1 copy example, 2 slots, a largest position of about
    249 on average in training.)"""
    max_position, samples, width = 2048, 4000, 40
    keys = jax.random.split(jax.random.key(size), samples)
    subsets = np.asarray(
        jax.vmap(lambda k: sorted_subset(k, size, max_position, width))(keys), np.float64
    )
    assert (subsets[:, size:] == max_position).all()  # filler past the example's own size
    largest = subsets[:, size - 1]
    expected = size * (max_position + 1) / (size + 1) - 1
    spread = max_position * np.sqrt(size / ((size + 1) ** 2 * (size + 2)))  # sd of the largest
    assert abs(largest.mean() - expected) < 6 * spread / np.sqrt(samples)
    # Every position is equally likely: the mean of all drawn positions is (L − 1) / 2.
    drawn = subsets[:, :size].ravel()
    uniform_sd = max_position / np.sqrt(12)
    assert abs(drawn.mean() - (max_position - 1) / 2) < 6 * uniform_sd / np.sqrt(drawn.size)


def test_a_subset_does_not_depend_on_the_padded_width():
    key = jax.random.key(3)
    narrow = sorted_subset(key, jnp.int32(4), 64, 4)
    wide = sorted_subset(key, jnp.int32(4), 64, 80)  # wider than the range: padded with filler
    np.testing.assert_array_equal(narrow, wide[:4])
    assert (np.asarray(wide[4:]) == 64).all()


def test_a_length_is_evaluated_on_the_same_positions_in_every_bucket():
    """The same length scored differently when eval.max_len moved it to another bucket."""
    settings = make_settings("task=copy", *RANDOMIZED)
    length = jnp.int32(5)
    real = settings.task.sequence_len(5)
    small, large = (eval_batch(settings, length, padded) for padded in (6, 24))
    np.testing.assert_array_equal(small.positions[:, :real], large.positions[:, :real])
    np.testing.assert_array_equal(small.inputs[:, :real], large.inputs[:, :real])
    assert np.asarray(small.positions[:, real - 1]).max() > real  # randomized, not 0..n−1
