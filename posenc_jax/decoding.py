"""How a model's answers are produced for scoring: greedy decoding, teacher forcing, or an
encoder's single pass.

In the shared layout (`tasks/base.py`), an example of input length n has its prompt in slots
0 … n (the input, then the ANSWER marker) and the targets y_1 … y_m at slots n … n+m−1. A
decoder's input at slot n+j is y_j, the answer before the one it predicts:

- "teacher_forced": one pass over the true inputs; slot n+j sees the true y_1 … y_j.
- "greedy": the model's own answers are fed back. ŷ_{j+1} = argmax of the logits at slot n+j,
  and ŷ_{j+1} is the input of slot n+j+1, so one early mistake reaches every later answer. This
  is how decoders are scored for length generalisation (Kazemnejad et al. 2023, "The Impact of
  Positional Encoding on Length Generalization in Transformers"; the autoregressive mode of
  Ruoss et al.'s harness, google-deepmind/randomized_positional_encodings).
- "encoder": an encoder reads blank answer slots in one pass; there is nothing to feed back.

Greedy decoding runs one forward pass over the prompt (the true answers are never fed in), which
leaves every layer's keys and values in a cache, then one `Transformer.decode_step` per further
answer: that step computes one slot's query, key and value and attends to the cache through the
same encoding hooks as a full pass. The whole answer thus costs about one more forward pass, not
one per answer. The steps run in a `lax.fori_loop` whose trip count is traced (the batch's
longest answer), so a padded width still compiles once.

Either way the result is logits [B, T, outputs] at every slot, which `metrics.count` scores as
usual (at an answer slot, greedy's argmax is the token it generated), and the inputs the model
read [B, T] (for attention maps of what it actually saw).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from posenc_jax.tasks import Batch
from posenc_jax.tasks.base import NUM_SPECIAL, PAD_ID

if TYPE_CHECKING:  # model.py imports the settings, which import the choices below
    from posenc_jax.model import Transformer

DECODINGS = ("greedy", "teacher_forced")
DEFAULT_DECODING = "greedy"


def greedy_decode(model: Transformer, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """Generate each example's answers greedily with a key/value cache -> (logits [B, T,
    outputs], inputs [B, T] with the generated answers fed back in their slots).

    Examples may have different input lengths; each decodes from its own slot n. Slots past an
    example's last answer are decoded too while a longer example finishes (they stay inside the
    padded width) but are masked out of every score. Raises ValueError for an encoder, which
    reads blank answer slots and was never trained on fed-back answers."""
    if not model.causal:
        raise ValueError("greedy decoding needs a decoder (model.causal=true); got an encoder.")
    rows = jnp.arange(batch.inputs.shape[0])
    slots = jnp.arange(batch.inputs.shape[1])[None, :]
    prompt = batch.token_mask & (slots <= batch.lengths[:, None])
    inputs = jnp.where(prompt, batch.inputs, PAD_ID)
    logits, _, caches = model.forward(inputs, batch.positions, prompt)
    # The first answer comes from the prompt's last slot; each further one takes a step.
    answers_after_first = batch.token_mask.sum(axis=1) - 1 - batch.lengths

    def step(j, carry):
        logits, inputs, caches = carry
        slot = batch.lengths + j
        token = jnp.argmax(logits[rows, slot - 1], axis=-1).astype(jnp.int32) + NUM_SPECIAL
        new_logits, caches = model.decode_step(
            token[:, None], slot, batch.positions, batch.token_mask, caches
        )
        return logits.at[rows, slot].set(new_logits[:, 0]), inputs.at[rows, slot].set(token), caches

    logits, inputs, _ = jax.lax.fori_loop(
        1, answers_after_first.max() + 1, step, (logits, inputs, caches)
    )
    return logits, jnp.where(batch.token_mask, inputs, PAD_ID)


def decode(model: Transformer, batch: Batch, scoring: str) -> tuple[jax.Array, jax.Array]:
    """The logits [B, T, outputs] to score and the inputs [B, T] they were computed from, under
    `scoring` ("greedy", "teacher_forced" or "encoder", see the module docstring)."""
    if scoring == "greedy":
        return greedy_decode(model, batch)
    return model(batch.inputs, batch.positions, batch.token_mask), batch.inputs
