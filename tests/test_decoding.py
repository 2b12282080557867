"""Greedy decoding with a key/value cache: the same answers as decoding by full recomputation,
for every encoding; the same scores as teacher forcing for a model that is always right; one
compilation per evaluation bucket; and the settings that choose it."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from posenc_jax.config import Settings
from posenc_jax.decoding import decode, greedy_decode
from posenc_jax.encodings import available
from posenc_jax.errors import ConfigError
from posenc_jax.evaluate import eval_batch, evaluate, length_buckets
from posenc_jax.model import build_model
from posenc_jax.tasks.base import NUM_SPECIAL, PAD_ID
from posenc_jax.train import train

from helpers import make_settings, perturb_parameters, task_for

# Every encoding (on a task it accepts), and the variants whose positions, frequencies or
# attention are computed differently: dynamic NTK reads the sequence length, randomized positions
# leave gaps, a hybrid routes layers to different encodings.
VARIANTS = [
    ("encoding=hybrid", "model.num_layers=3", "encoding.layers=[fox,rope,stick_breaking]"),
    ("encoding=path", "encoding.forget_gate=true"),
    ("encoding=rope", "encoding.fraction=0.5", "encoding.partial=p_rope"),
    ("encoding=rope", "encoding.scaling=dynamic_ntk", "encoding.scale=2"),
    ("encoding=rope", "encoding.randomized=true", "encoding.max_position=64"),
    ("encoding=xpos", "encoding.randomized=true", "encoding.max_position=64"),
]
CONFIGS = [(f"encoding={name}", f"task={task_for(name, 'reverse')}") for name in available()] + [
    (*variant, "task=reverse") for variant in VARIANTS
]


def with_decoding(settings: Settings, decoding: str) -> Settings:
    return dataclasses.replace(settings, eval=dataclasses.replace(settings.eval, decoding=decoding))


def mixed_length_batch(settings: Settings, lengths: list[int], padded_len: int):
    """Evaluation examples of several input lengths in one padded batch, so that each example
    decodes from its own slot."""
    parts = [eval_batch(settings, jnp.int32(n), padded_len) for n in lengths]
    return jax.tree.map(lambda *a: jnp.concatenate([x[:1] for x in a]), *parts)


def greedy_by_recomputation(model, batch) -> tuple[np.ndarray, np.ndarray]:
    """Greedy decoding without a cache: a full forward pass over everything generated so far
    for every answer, feeding back the argmax of the slot before."""
    lengths, token_mask = np.asarray(batch.lengths), np.asarray(batch.token_mask)
    last_slot = token_mask.sum(axis=1) - 1
    slots = np.arange(token_mask.shape[1])[None, :]
    inputs = np.where(token_mask & (slots <= lengths[:, None]), np.asarray(batch.inputs), PAD_ID)
    forward = jax.jit(lambda tokens: model(tokens, batch.positions, batch.token_mask))
    for step in range(1, int((last_slot - lengths).max()) + 1):
        logits = np.asarray(forward(jnp.asarray(inputs)))
        for b in np.flatnonzero(lengths + step <= last_slot):
            slot = lengths[b] + step
            inputs[b, slot] = np.argmax(logits[b, slot - 1]) + NUM_SPECIAL
    return np.asarray(forward(jnp.asarray(inputs))), inputs


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda o: "-".join(o).replace("encoding", ""))
def test_cached_greedy_decoding_equals_full_recomputation(overrides):
    settings = make_settings(
        *overrides, "model.causal=true", "model.d_model=16", "task.train_max_len=4"
    )
    model = build_model(settings, jax.random.key(0))
    perturb_parameters(model.encoding, scale=0.5, seed=3)  # generic, e.g. not CoPE's zeros
    batch = mixed_length_batch(settings, [1, 3, 6, 8], padded_len=8)

    logits, inputs = jax.jit(greedy_decode)(model, batch)
    expected_logits, expected_inputs = greedy_by_recomputation(model, batch)

    real = np.asarray(batch.token_mask)
    np.testing.assert_array_equal(np.asarray(inputs), expected_inputs)
    np.testing.assert_allclose(np.asarray(logits)[real], expected_logits[real], atol=1e-4)
    # The answers fed back are the model's own, not the true ones.
    fed_back = real & (np.arange(real.shape[1]) > np.asarray(batch.lengths)[:, None])
    assert (np.asarray(inputs) != np.asarray(batch.inputs))[fed_back].any()


def test_greedy_scores_equal_teacher_forcing_where_the_model_is_always_right():
    # A decoder trained until it copies inputs of up to 4 tokens perfectly (about 5 s on 2 CPU
    # cores, mostly compiling); at lengths 5 and 6 it makes mistakes.
    settings = make_settings(
        "model.causal=true",
        "task=copy",
        "task.vocab_size=4",
        "encoding=rope",
        "train.steps=300",
        "train.batch_size=64",
        "train.steps_per_dispatch=50",
        "train.log_every=50",
        "optim.learning_rate=3e-3",
        "task.train_max_len=4",
        "eval.max_len=6",
    )
    outcome = train(settings, lambda *_: None)
    greedy = evaluate(settings, outcome.graphdef, outcome.params)
    forced = evaluate(with_decoding(settings, "teacher_forced"), outcome.graphdef, outcome.params)
    assert (greedy["scoring"], forced["scoring"]) == ("greedy", "teacher_forced")
    # One compilation per bucket, not per length, with the decoding loop inside.
    assert greedy["num_compilations"] == len(greedy["buckets"]) == len(length_buckets(4, 6))

    # Up to its first wrong answer greedy decoding reads the true answers, so it makes the same
    # first mistake, or none: exact match agrees at every length, right or wrong.
    assert greedy["seq_acc"] == forced["seq_acc"]
    always_right = [i for i, exact in enumerate(forced["seq_acc"]) if exact == 1.0]
    assert len(always_right) >= 3, forced["seq_acc"]
    assert greedy["token_acc"] != forced["token_acc"]  # where it errs, greedy reads its errors
    for i in always_right:
        assert greedy["token_acc"][i] == forced["token_acc"][i] == 1.0
        assert greedy["seq_acc"][i] == 1.0

    # The same model decodes, with the very same logits, exactly the true answers there.
    @jax.jit
    def both_decodings(params):
        model = nnx.merge(outcome.graphdef, params)
        batch = eval_batch(settings, jnp.int32(always_right[-1] + 1), 4)
        return batch, decode(model, batch, "greedy"), decode(model, batch, "teacher_forced")

    batch, (greedy_logits, greedy_inputs), (forced_logits, forced_inputs) = both_decodings(
        outcome.params
    )
    np.testing.assert_array_equal(np.asarray(greedy_inputs), np.asarray(forced_inputs))
    real = np.asarray(batch.token_mask)
    np.testing.assert_allclose(
        np.asarray(greedy_logits)[real], np.asarray(forced_logits)[real], atol=1e-4
    )


@pytest.mark.parametrize(
    "overrides, scoring",
    [
        (["model.causal=true"], "greedy"),
        (["model.causal=true", "eval.decoding=greedy"], "greedy"),
        (["model.causal=true", "eval.decoding=teacher_forced"], "teacher_forced"),
        ([], "encoder"),
    ],
)
def test_decoders_default_to_greedy_scoring(overrides, scoring):
    assert make_settings(*overrides).scoring == scoring


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model.causal=true", "eval.decoding=beam"],
            "decoding='beam' in section 'eval' is unknown; valid choices are "
            "['greedy', 'teacher_forced'], or null",
        ),
        (["eval.decoding=greedy"], "applies to decoders (model.causal=true) only"),
        (["eval.decoding=teacher_forced"], "Leave eval.decoding unset (null)"),
    ],
)
def test_bad_decoding_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_settings(*overrides)


def test_an_encoder_cannot_be_decoded_greedily():
    settings = make_settings("task=reverse")
    batch = eval_batch(settings, jnp.int32(3), 6)
    with pytest.raises(ValueError, match="needs a decoder"):
        greedy_decode(build_model(settings, jax.random.key(0)), batch)
