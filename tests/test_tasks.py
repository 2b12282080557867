"""Task samplers against plain-Python rules, in both model modes, at edge lengths too."""

import dataclasses
import functools
import itertools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from posenc_jax.errors import ConfigError
from posenc_jax.tasks import ANSWER_ID, NUM_SPECIAL, PAD_ID, available, make_task
from posenc_jax.tasks.regular import evaluate_modular

from helpers import make_settings


def _modular_arithmetic(tokens, modulus=5):
    symbols = [str(t) if t < modulus else "+-*_"[t - modulus] for t in tokens]
    assert symbols[::2] == [s for s in symbols[::2] if s.isdigit()], (
        symbols
    )  # residues at even slots
    if symbols[-1] == "_":
        symbols = symbols[:-1]
    return [eval("".join(symbols)) % modulus]  # Python: * before + and −, % is non-negative


def _missing_duplicate(tokens):
    half = len(tokens) // 2
    first, second, pad = tokens[:half], tokens[half : 2 * half], tokens[2 * half :]
    assert pad == [3] * (len(tokens) % 2) and (first + second).count(2) == 1, tokens
    assert all(a == b for a, b in zip(first, second, strict=True) if 2 not in (a, b)), tokens  # w w
    return [second[first.index(2)] if 2 in first else first[second.index(2)]]


def _binary_operation(tokens, operation):
    """Operands little-endian around the operator 2; the result little-endian, then the
    terminator 2 (the slots after it are not scored, so they do not appear here)."""
    cut = tokens.index(2)
    a, b = tokens[:cut], tokens[cut + 1 :]
    assert a and b and 2 not in b and any(a) and any(b), tokens  # nonzero operands
    value = operation(
        int("".join(map(str, reversed(a))), 2), int("".join(map(str, reversed(b))), 2)
    )
    return [int(bit) for bit in reversed(f"{value:b}")] + [2]


def _stack_manipulation(tokens):
    """Bits first (the stack, bottom to top), then actions 2 = POP, 3 = PUSH 0, 4 = PUSH 1."""
    split = next((i for i, t in enumerate(tokens) if t >= 2), len(tokens))
    assert split >= 1 and all(t >= 2 for t in tokens[split:]), tokens
    stack = list(tokens[:split])
    for action in tokens[split:]:
        if action == 2:
            if stack:
                stack.pop()
        else:
            stack.append(action - 3)
    return stack[::-1] + [2]


def _associative_recall(tokens, num_keys=64, num_values=16):
    filler = num_keys + num_values
    if len(tokens) % 2 == 0:
        assert tokens[0] == filler, tokens
        tokens = tokens[1:]
    *pairs, query = tokens
    keys, values = pairs[0::2], pairs[1::2]
    assert all(k < num_keys for k in keys + [query]) and all(num_keys <= v < filler for v in values)
    assert len(set(keys)) == len(keys) and query in keys, tokens  # distinct keys, query is one
    return [values[keys.index(query)] - num_keys]


def _index_lookup(tokens, num_symbols=16):
    separator = tokens.index(num_symbols)
    stored, digits = tokens[:separator], tokens[separator + 1 :]
    assert len(digits) == len(str(len(tokens))) and all(
        num_symbols < d <= num_symbols + 10 for d in digits
    )
    index = int("".join(str(d - num_symbols - 1) for d in digits))
    assert all(t < num_symbols for t in stored) and index < len(stored), tokens
    return [stored[index]]


def _addition(tokens, digit_order="msd"):
    cut = tokens.index(10)
    a, b = tokens[:cut], tokens[cut + 1 :]
    assert a and b and all(d < 10 for d in a + b), tokens

    def as_number(digits):
        return int("".join(map(str, digits if digit_order == "msd" else digits[::-1])))

    total = [int(d) for d in str(as_number(a) + as_number(b))]
    return (total if digit_order == "msd" else total[::-1]) + [10]


def _sort(tokens, digits=2):
    fill = len(tokens) % digits
    assert tokens[:fill] == [10] * fill and all(d < 10 for d in tokens[fill:]), tokens
    body = tokens[fill:]
    numbers = sorted(
        body[i : i + digits] for i in range(0, len(body), digits)
    )  # lexicographic = numeric
    return [d for number in numbers for d in number]


def _modular_arithmetic_brackets(tokens, modulus=5):
    text = "".join(str(t) if t < modulus else "+-*()"[t - modulus] for t in tokens)
    return [eval(text) % modulus]  # unary minus and brackets as in Python


def _solve_equation(tokens, modulus=5):
    *expression, equals, value = tokens
    assert equals == modulus + 6 and value < modulus and expression.count(modulus + 5) == 1, tokens
    hole = expression.index(modulus + 5)
    solutions = [
        d
        for d in range(modulus)
        if _modular_arithmetic_brackets(expression[:hole] + [d] + expression[hole + 1 :]) == [value]
    ]
    assert len(solutions) == 1, tokens  # + and − only: exactly one x works
    return solutions


RULES = {
    "copy": lambda tokens: list(tokens),
    "reverse": lambda tokens: list(reversed(tokens)),
    "word_order": lambda tokens: [int(list(tokens) == sorted(tokens))],
    "even_pairs": lambda bits: [sum(a != b for a, b in itertools.pairwise(bits)) % 2],
    "parity": lambda bits: [sum(bits) % 2],
    "cycle_navigation": lambda moves: [sum(m - 1 for m in moves) % 5],
    "modular_arithmetic": _modular_arithmetic,
    "duplicate_string": lambda tokens: list(tokens) * 2,
    "odds_first": lambda tokens: list(tokens[0::2]) + list(tokens[1::2]),
    "bucket_sort": lambda tokens: sorted(tokens),
    "missing_duplicate": _missing_duplicate,
    "binary_addition": lambda tokens: _binary_operation(tokens, lambda a, b: a + b),
    "binary_multiplication": lambda tokens: _binary_operation(tokens, lambda a, b: a * b),
    "stack_manipulation": _stack_manipulation,
    "associative_recall": _associative_recall,
    "index_lookup": _index_lookup,
    "addition": _addition,
    "modular_arithmetic_brackets": _modular_arithmetic_brackets,
    "solve_equation": _solve_equation,
    "sort": _sort,
    "count": lambda tokens: [
        int(d) for d in str(tokens[:-1].count(tokens[-1])).zfill(len(str(len(tokens) - 1)))
    ],
    "compute_sqrt": lambda bits: [
        int(b)
        for b in f"{math.isqrt(int(''.join(map(str, bits)), 2)):b}".zfill((len(bits) + 1) // 2)
    ],
}


def _rule(task):
    """The plain rule of a task, given its parameters where the rule depends on them."""
    if task.name == "addition":
        return functools.partial(_addition, digit_order=task.digit_order)
    if task.name == "sort":
        return functools.partial(_sort, digits=task.digits)
    return RULES[task.name]


# Every task at its defaults, plus the parameter values that change the rule.
CASES = [(name, {}) for name in available()] + [("addition", {"digit_order": "lsd"})]


def _examples(task, batch):
    """Decode a Batch back into plain Python (content, answers, row) triples."""
    inputs, targets, mask = (
        np.asarray(a) for a in (batch.inputs, batch.targets, batch.target_mask)
    )
    for row, n in enumerate(np.asarray(batch.lengths)):
        content = [int(t) - NUM_SPECIAL for t in inputs[row, :n]]
        answers = [int(t) for t in targets[row][mask[row]]]
        yield content, answers, row


def _check_batch(task, batch, causal):
    inputs, positions = np.asarray(batch.inputs), np.asarray(batch.positions)
    token_mask, target_mask = np.asarray(batch.token_mask), np.asarray(batch.target_mask)
    for content, answers, row in _examples(task, batch):
        n, m = len(content), len(answers)
        slots = task.answer_len(n)  # answer slots; the first m are scored
        assert all(0 <= t < task.vocab_size for t in content)
        assert answers == _rule(task)(content), (content, answers)
        assert list(target_mask[row, n : n + slots]) == [True] * m + [False] * (slots - m)
        # Shared layout: answers start at slot n, positions count up, padding is masked.
        assert token_mask[row].sum() == n + slots
        assert list(positions[row, : n + slots]) == list(range(n + slots))
        assert (positions[row, n + slots :] == 0).all() and (
            inputs[row, n + slots :] == PAD_ID
        ).all()
        assert inputs[row, n] == ANSWER_ID
        expected_rest = [a + NUM_SPECIAL for a in answers[:-1]] if causal else [ANSWER_ID] * (m - 1)
        assert list(inputs[row, n + 1 : n + m]) == expected_rest


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "name, params", CASES, ids=[f"{n}{''.join(f'-{v}' for v in p.values())}" for n, p in CASES]
)
def test_sampler_matches_plain_rule(name, params, causal):
    task = make_task({"name": name, "train_max_len": 12, **params})
    for seed in range(5):
        length_key, sample_key = jax.random.split(jax.random.key(seed))
        lengths = task.sample_lengths(length_key, 64)
        _check_batch(task, task.sample(sample_key, lengths, 12, causal), causal)


@hyp_settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(available()),
    length_choice=st.sampled_from(["min", "train_max", "eval_max"]),
    causal=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_edge_lengths(name, length_choice, causal, seed):
    task = make_task({"name": name, "train_max_len": 16})
    n = {"min": task.min_input_len, "train_max": 16, "eval_max": 64}[length_choice]
    batch = task.sample(jax.random.key(seed), jnp.full((8,), n, jnp.int32), 64, causal)
    _check_batch(task, batch, causal)


def test_word_order_classes_are_balanced_and_negatives_are_one_adjacent_swap():
    task = make_task({"name": "word_order"})
    lengths = task.sample_lengths(jax.random.key(0), 512)
    batch = task.sample(jax.random.key(1), lengths, task.train_max_len, causal=False)
    labels = []
    for content, answers, _ in _examples(task, batch):
        labels.append(answers[0])
        if answers[0] == 0:
            descents = [i for i in range(len(content) - 1) if content[i] > content[i + 1]]
            assert len(descents) == 1
            i = descents[0]
            fixed = content[:i] + [content[i + 1], content[i]] + content[i + 2 :]
            assert fixed == sorted(content)
    assert labels.count(0) == labels.count(1) == 256


def test_word_order_single_examples_are_either_class():
    """A batch of one example starts at a class drawn from its key: over 2000 keys the number
    of canonical sentences is within 4 standard deviations (89) of 1000. (When labels started at
    class 0 in every batch, a one-example batch was always swapped.)"""
    task = make_task({"name": "word_order"})
    keys = jax.random.split(jax.random.key(3), 2000)
    _, labels = jax.vmap(lambda k: task.generate(k, jnp.full((1,), 6, jnp.int32), 6))(keys)
    assert abs(int(labels.sum()) - 1000) < 89


def test_word_order_swap_falls_anywhere():
    task = make_task({"name": "word_order"})
    n = 10
    batch = task.sample(jax.random.key(2), jnp.full((2000,), n, jnp.int32), n, causal=False)
    places = {
        next(i for i in range(n - 1) if c[i] > c[i + 1])
        for c, a, _ in _examples(task, batch)
        if a[0] == 0
    }
    assert places == set(range(n - 1))


def test_training_lengths_cover_the_configured_range():
    task = make_task({"name": "copy", "train_min_len": 3, "train_max_len": 9})
    lengths = np.asarray(task.sample_lengths(jax.random.key(0), 4000))
    assert set(lengths.tolist()) == set(range(3, 10))


@pytest.mark.parametrize("name", available())
def test_examples_do_not_depend_on_padding(name):
    """Evaluation pads lengths into buckets; an example must be the same in every bucket."""
    task = make_task({"name": name})
    lengths = jnp.full((16,), 7, jnp.int32)
    short = task.sample(jax.random.key(5), lengths, 8, causal=True)
    long = task.sample(jax.random.key(5), lengths, 32, causal=True)
    real = 7 + task.answer_len(7)
    np.testing.assert_array_equal(short.inputs[:, :real], long.inputs[:, :real])
    np.testing.assert_array_equal(short.targets[:, :real], long.targets[:, :real])


def test_unknown_task_is_a_clear_error():
    with pytest.raises(
        ConfigError,
        match=rf"Unknown task 'sorting'; valid choices are {re.escape(str(available()))}",
    ):
        make_task({"name": "sorting"})


def test_modular_arithmetic_worked_examples():
    """Delétang et al.'s examples (modulo 5), encoded: residues 0-4, then + − * _ as 5-8."""

    def encode(text):
        return [int(c) if c.isdigit() else 5 + "+-*_".index(c) for c in text.split()]

    for text, value in [
        ("1 + 2 * 3", 2),
        ("1 - 1 - 1", 4),
        ("0 * 1 + 4 * 3 - 2", 0),
        ("3 * 4 _", 2),
    ]:
        tokens = encode(text)
        residues = jnp.asarray([[t if i % 2 == 0 else 0 for i, t in enumerate(tokens)]])
        operators = jnp.asarray([[t - 5 if i % 2 else 0 for i, t in enumerate(tokens)]])
        assert (
            int(evaluate_modular(residues, operators, jnp.asarray([len(tokens)]), 5)[0]) == value
        ), text


def test_bad_training_range_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"train_min_len=9.*train_max_len=4"):
        make_settings("task.train_min_len=9", "task.train_max_len=4")


def test_lengths_a_task_cannot_generate_are_a_clear_error():
    # 4 distinct keys hold at most 4 pairs: inputs of at most 2·4 + 2 = 10 tokens.
    with pytest.raises(
        ConfigError,
        match=r"'associative_recall' can generate inputs of at most 10 tokens.*asks for 32 "
        r"\(task.train_max_len=8, eval.max_len=32\)",
    ):
        make_settings(
            "task=associative_recall", "task.num_keys=4", "task.train_max_len=8", fast=False
        )


def _task_parameters(name):
    """The task's own integer parameters (its YAML keys beyond the training range)."""
    task = make_task({"name": name})
    return [
        field.name
        for field in dataclasses.fields(task)
        if field.name not in ("train_min_len", "train_max_len")
        and type(getattr(task, field.name)) is int
    ]


@pytest.mark.parametrize(
    "name, field",
    [(name, field) for name in available() for field in _task_parameters(name)],
)
def test_every_task_parameter_is_refused_at_zero_and_below_or_samples_in_range(name, field):
    """Sort's digits=0 once divided by zero before validation; every parameter, at -1 and 0, is
    either a ConfigError naming it or a task that samples valid batches."""
    for value in (-1, 0, 1):
        try:
            settings = make_settings(f"task={name}", f"task.{field}={value}")
        except ConfigError as error:
            assert f"task.{field}={value}" in str(error) or f"Task {name!r}" in str(error)
            continue
        task, longest = settings.task, settings.eval_max_len
        lengths = jnp.asarray([settings.eval_min_len, task.train_max_len, longest], jnp.int32)
        _check_batch(task, task.sample(jax.random.key(value + 1), lengths, longest, False), False)
