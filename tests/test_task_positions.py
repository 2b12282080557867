"""Task-structured positions: the digit roles that `binary_addition` and `addition` give, and
Abacus and position-coupling ids against plain-Python re-implementations of the official rules
(mcleish7/arithmetic `Abacus`: digits numbered from 1 within their run, plus a per-batch offset
in training; HanseulJo/position-coupling: start + 1 + place, start for `+` and `=`, 0 else)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.encodings.abacus import abacus_ids
from posenc_jax.encodings.coupled import coupled_ids
from posenc_jax.errors import ConfigError
from posenc_jax.evaluate import eval_batch
from posenc_jax.positions import position_scheme
from posenc_jax.tasks.base import DigitRoles

from helpers import make_settings

TASKS = [("task=binary_addition",), ("task=addition", "task.digit_order=lsd")]


def roles_by_rule(tokens, n, answers, causal, operator):
    """Plain Python: places of a op b -> result, each least significant digit first."""
    at = tokens.index(operator)
    places, separators = [], []
    for slot in range(n):
        separators.append(slot == at)
        places.append(-1 if slot == at else (slot if slot < at else slot - at - 1))
    for j in range(answers):
        separators.append(causal and j == 0)
        places.append((j - 1 if j else -1) if causal else j)
    return places, separators


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("task", TASKS)
def test_digit_roles_follow_the_numbers(task, causal):
    settings = make_settings(*task, f"model.causal={causal}")
    operator = {"binary_addition": 2, "addition": 10}[settings.task.name] + 2  # + NUM_SPECIAL
    for n in (3, 7, 12):
        batch = eval_batch(settings, jnp.int32(n), 12)
        roles = settings.task.digit_roles(batch, causal)
        for b in range(4):
            real = int(batch.token_mask[b].sum())
            tokens = [int(t) for t in batch.inputs[b]]
            places, separators = roles_by_rule(tokens, n, real - n, causal, operator)
            assert [int(p) for p in roles.significance[b, :real]] == places
            assert [bool(s) for s in roles.separator[b, :real]] == separators
            assert np.all(np.asarray(roles.significance[b, real:]) == -1)


def test_answer_roles_do_not_depend_on_the_answer():
    """Greedy decoding must not see the answer's length through its positions: two batches
    with the same inputs and different answers get the same roles."""
    settings = make_settings("task=binary_addition", "model.causal=true")
    batch = eval_batch(settings, jnp.int32(9), 9)
    changed = batch._replace(inputs=jnp.where(batch.target_mask, 2, batch.inputs))
    for field in DigitRoles._fields:
        np.testing.assert_array_equal(
            getattr(settings.task.digit_roles(batch, True), field),
            getattr(settings.task.digit_roles(changed, True), field),
        )


def official_abacus(tokens, digits, offset):
    """mcleish7/arithmetic Abacus.helper: each run of digit tokens numbered 1, 2, … from its left
    end, 0 elsewhere, then + k on the digits."""
    out, run = [], 0
    for token in tokens:
        run = run + 1 if token in digits else 0
        out.append(run + offset if run else 0)
    return out


@pytest.mark.parametrize("offset", [0, 37])
def test_abacus_ids_match_the_official_run_numbering(offset):
    """On a decoder's addition (lsd), runs of digit tokens: a, b, and the answer's digits."""
    settings = make_settings("task=addition", "task.digit_order=lsd", "model.causal=true")
    batch = eval_batch(settings, jnp.int32(9), 9)
    roles = settings.task.digit_roles(batch, True)
    ids = np.asarray(abacus_ids(roles, offset))
    digits = set(range(2, 12))  # the ten digits' input ids
    for b in range(4):
        # Up to the slot holding the answer's last digit: the terminator after it, which the
        # official code numbers 0, a role from the slot cannot tell without reading the
        # answer, and nothing after it is scored.
        scored_end = int(np.flatnonzero(np.asarray(batch.target_mask[b]))[-1]) + 1
        tokens = [int(t) for t in batch.inputs[b, :scored_end]]
        assert list(ids[b, :scored_end]) == official_abacus(tokens, digits, offset)


def official_coupling(a, b, result, start):
    """HanseulJo/position-coupling, for a, b written most significant first (no zero padding)
    and the result reversed: digits of place i get start + 1 + i, + and = get start."""
    a_ids = [start + 1 + i for i in range(len(a))][::-1]
    b_ids = [start + 1 + i for i in range(len(b))][::-1]
    return a_ids + [start] + b_ids + [start] + [start + 1 + i for i in range(len(result))]


def test_coupled_ids_match_the_official_rule_on_a_worked_example():
    """57 + 1234 = 1291 with start s: the official ids, here with the numbers least significant
    first (the tasks' layout), so each operand's ids read reversed."""
    s = 4
    expected = official_coupling("57", "1234", "1921", s)
    a, b = expected[:2][::-1], expected[3:7][::-1]  # our operands are least significant first
    ours = a + [s] + b + expected[7:]
    roles = DigitRoles(
        significance=jnp.asarray([[0, 1, -1, 0, 1, 2, 3, -1, 0, 1, 2, 3]]),
        separator=jnp.asarray([[False, False, True] + [False] * 4 + [True] + [False] * 4]),
    )
    assert list(np.asarray(coupled_ids(roles, s))[0]) == ours


def test_training_draws_random_offsets_and_evaluation_is_fixed():
    for encoding in ("abacus", "coupled"):
        settings = make_settings(f"encoding={encoding}", "task=binary_addition")
        batch = eval_batch(settings, jnp.int32(6), 6)
        drawn = [
            np.asarray(position_scheme(settings, jax.random.key(k), batch, True).positions)
            for k in range(6)
        ]
        fixed = [
            np.asarray(position_scheme(settings, jax.random.key(k), batch, False).positions)
            for k in range(2)
        ]
        assert len({d.tobytes() for d in drawn}) > 1, encoding
        np.testing.assert_array_equal(fixed[0], fixed[1])
        assert all(d.max() < settings.encoding.num_positions + 101 for d in drawn)


def test_abacus_offset_is_one_per_batch_and_coupling_start_one_per_example():
    settings = make_settings("encoding=abacus", "task=binary_addition")
    batch = eval_batch(settings, jnp.int32(6), 6)
    positions = np.asarray(position_scheme(settings, jax.random.key(3), batch, True).positions)
    roles = settings.task.digit_roles(batch, False)
    offsets = positions - np.asarray(abacus_ids(roles, 0))
    digit = np.asarray(roles.significance) >= 0
    assert len(set(offsets[digit].tolist())) == 1 and 0 <= offsets[digit][0] <= 100

    settings = make_settings("encoding=coupled", "task=binary_addition", "train.batch_size=64")
    batch = eval_batch(settings, jnp.int32(6), 6)
    roles = settings.task.digit_roles(batch, False)
    positions = np.asarray(position_scheme(settings, jax.random.key(3), batch, True).positions)
    starts = positions[:, 0] - 1 - np.asarray(roles.significance)[:, 0]
    assert len(set(starts.tolist())) > 1  # per example
    assert positions.max() <= settings.encoding.max_position and starts.min() >= 1


@pytest.mark.parametrize("encoding", ["abacus", "coupled"])
def test_tasks_without_digit_roles_are_refused(encoding):
    with pytest.raises(
        ConfigError,
        match=rf"encoding={encoding} places positions.*task 'reverse' does not say which slot.*"
        r"Tasks that give it: \['binary_addition', 'addition'\]",
    ):
        make_settings(f"encoding={encoding}", "task=reverse")
    with pytest.raises(ConfigError, match=r"digit_order=msd a sum's first digit has a place"):
        make_settings(f"encoding={encoding}", "task=addition")


@pytest.mark.parametrize(
    "overrides, longest",
    [
        (("encoding=coupled", "encoding.max_position=40"), 38),
        (("encoding=coupled", "encoding.max_position=40", "model.causal=true"), 39),
        (("encoding=abacus", "encoding.table_size=18", "encoding.max_offset=5"), 16),
    ],
)
def test_representable_lengths_are_exactly_those_whose_ids_fit(overrides, longest):
    """The bound is the largest id, not the number of slots: the longest representable length
    reaches the table's last row, and the next one would pass it."""
    settings = make_settings("task=binary_addition", *overrides, "eval.max_len=48")
    assert settings.represents_length(longest) and not settings.represents_length(longest + 1)
    batch = eval_batch(settings, jnp.int32(longest), longest)
    positions = position_scheme(settings, jax.random.key(0), batch, training=False).positions
    assert int(positions.max()) == settings.encoding.num_positions - 1


def test_a_training_length_whose_ids_do_not_fit_is_refused():
    with pytest.raises(
        ConfigError, match=r"task.train_max_len=12 needs 20 positions .* represents only 18"
    ):
        make_settings(
            "encoding=abacus",
            "task=binary_addition",
            "encoding.table_size=18",
            "encoding.max_offset=6",
            "task.train_max_len=12",
            "eval.max_len=12",
        )


@pytest.mark.parametrize("encoding", ["abacus", "learned"])
def test_a_table_past_two_to_the_24_rows_is_refused(encoding):
    """It once ran out of memory with a traceback at 2^40 rows."""
    with pytest.raises(ConfigError, match=r"encoding.table_size=1099511627776 must be between"):
        make_settings(
            f"encoding={encoding}", "task=binary_addition", "encoding.table_size=1099511627776"
        )
