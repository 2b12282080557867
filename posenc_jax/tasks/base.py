"""The task interface, and the one sequence layout shared by every task and both model modes.

A task draws `content` tokens for an input of length n and the `answers` the model must produce
(m = answer_len(n) of them). Every task is laid out the same way, in T = N + M slots, where N is
the padded input length and M = answer_len(N):

    encoder:  x_1 … x_n  ANSWER ANSWER … ANSWER   PAD …
    decoder:  x_1 … x_n  ANSWER y_1    … y_{m-1}  PAD …
    targets:             y_1    y_2    … y_m             (target_mask is True on these m slots)

The answer slots start right after the input, at position n, so an example of length n uses the
positions 0 … n+m-1 whatever the padding. In decoder mode the model reads y_j at the slot before
it (teacher forcing), so the same targets and mask serve both modes. Padding slots get position
0 and are masked out of attention and of the metrics.

Token ids: 0 = PAD, 1 = ANSWER, content and answer token t ↦ t + NUM_SPECIAL.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from posenc_jax.errors import ConfigError, require_at_least
from posenc_jax.spec import Spec

PAD_ID = 0
ANSWER_ID = 1
NUM_SPECIAL = 2


class Batch(NamedTuple):
    """One batch in the shared layout. All arrays are [batch, T] except `lengths` [batch]."""

    inputs: jax.Array  # int32 token ids
    positions: jax.Array  # int32 positions, 0 on padding
    targets: jax.Array  # int32 output ids, 0 where target_mask is False
    target_mask: jax.Array  # bool: slots scored by the loss and the metrics
    token_mask: jax.Array  # bool: real (non-padding) slots
    lengths: jax.Array  # int32 input length n of each example


class DigitRoles(NamedTuple):
    """What each slot of a batch is in a task made of numbers, for encodings whose positions
    follow the task's structure (Abacus, position coupling). [batch, T] each:

    - significance: int32 place value of the slot's digit in its number (0 = units), −1 for
      slots that are no digit;
    - separator: bool, the slots between numbers (the operator, the decoder's answer marker).

    Answer slots take their role from the slot, never from the answer's tokens, so greedy
    decoding sees nothing of an answer it has not written: in a decoder the slot holding
    y_j (j >= 1) is the result's digit of place j − 1; in an encoder answer slot j stands for
    the digit it predicts, of place j. Slots after the result's end continue the count and
    are not scored."""

    significance: jax.Array
    separator: jax.Array


@dataclasses.dataclass(frozen=True)
class TaskSpec(Spec, abc.ABC):
    """A task's parameters and its jittable sampler."""

    train_min_len: int = 1
    train_max_len: int = 16

    # Class-level facts about a task (not user parameters). A task whose alphabet is a
    # parameter declares `vocab_size` as a dataclass field instead.
    min_input_len: ClassVar[int] = 1  # the shortest input the rule is defined for
    max_input_len: ClassVar[int | None] = (
        None  # the longest input the task can generate (None: any)
    )
    # "classification" (one answer) or "sequence" (per-token answers)
    kind: ClassVar[str] = "sequence"
    vocab_size: ClassVar[int] = 16  # input tokens are 0 .. vocab_size-1

    @property
    def num_outputs(self) -> int:
        """Size of the output head: the answer alphabet."""
        return self.vocab_size

    @property
    def input_vocab_size(self) -> int:
        # Answers are fed back as inputs in decoder mode, so they need embeddings too.
        return NUM_SPECIAL + max(self.vocab_size, self.num_outputs)

    def answer_len(self, n):
        """Number of answer slots for an input of length n (int or int array)."""
        return n

    def sequence_len(self, n: int) -> int:
        """Slots (and hence positions) one example of input length n occupies."""
        return n + self.answer_len(n)

    @abc.abstractmethod
    def generate(
        self, key: jax.Array, lengths: jax.Array, padded_len: int
    ) -> tuple[jax.Array, jax.Array]:
        """Draw examples: lengths [B] -> content [B, padded_len] in [0, vocab_size) and answers
        [B, answer_len(padded_len)] in [0, num_outputs). Entries past an example's length are
        ignored."""

    def sample_lengths(
        self,
        key: jax.Array,
        batch_size: int,
        min_len: int | None = None,
        max_len: int | None = None,
    ) -> jax.Array:
        """Training lengths, uniform on [min_len, max_len] (default: [train_min_len,
        train_max_len]; narrower for a length bucket): [batch_size] int32."""
        low = self.train_min_len if min_len is None else min_len
        high = self.train_max_len if max_len is None else max_len
        return jax.random.randint(key, (batch_size,), low, high + 1)

    def scored(self, answers: jax.Array) -> jax.Array | None:
        """Which answer slots count in the loss and the metrics, [B, M] bool; None = all of
        them. Tasks whose answer ends with a terminator leave the padding after it unscored."""
        return None

    def why_no_digit_roles(self) -> str | None:
        """Why this task gives no `DigitRoles` (None for a `NumberTask` that gives them)."""
        return f"task {self.name!r} does not say which slot is which digit of which number"

    def sample(self, key: jax.Array, lengths: jax.Array, padded_len: int, causal: bool) -> Batch:
        """A batch of examples with the given input lengths, padded to `padded_len` (static)."""
        content, answers = self.generate(key, lengths, padded_len)
        return layout(
            content, answers, lengths, self.answer_len(lengths), causal, self.scored(answers)
        )

    def validate(self) -> None:
        if not self.min_input_len <= self.train_min_len <= self.train_max_len:
            raise ConfigError(
                f"task.train_min_len={self.train_min_len} and task.train_max_len="
                f"{self.train_max_len} must satisfy {self.min_input_len} <= train_min_len <= "
                f"train_max_len for task {self.name!r}."
            )
        require_at_least("task.vocab_size", self.vocab_size, 2)


class NumberTask(TaskSpec, abc.ABC):
    """A task made of numbers, which says what every slot is in them (`DigitRoles`): what
    Abacus and position coupling place positions by. A subclass may still refuse for some of
    its parameters, through `why_no_digit_roles`."""

    def why_no_digit_roles(self) -> str | None:
        return None

    @abc.abstractmethod
    def digit_roles(self, batch: Batch, causal: bool) -> DigitRoles:
        """The role of every slot of `batch` (see `DigitRoles`)."""

    @abc.abstractmethod
    def largest_place(self, n: int, causal: bool) -> int:
        """The largest place value any slot of an example of input length n has in its
        `DigitRoles`."""


class ClassificationTask(TaskSpec, abc.ABC):
    """A task with one answer per example: a class in [0, num_classes)."""

    kind = "classification"
    num_classes: ClassVar[int] = 2

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    def answer_len(self, n):
        return jnp.ones_like(n) if isinstance(n, jax.Array) else 1


class TerminatedTask(TaskSpec, abc.ABC):
    """A task whose answer is a variable-length result, then a terminator, then 0s up to the
    fixed number of answer slots; the slots after the terminator are padding and not scored
    (Delétang et al.'s accuracy mask)."""

    terminator: ClassVar[int] = 2

    def scored(self, answers):
        terminator_at = jnp.argmax(answers == self.terminator, axis=1)[:, None]
        return jnp.arange(answers.shape[1])[None, :] <= terminator_at

    def terminated(
        self, values: jax.Array, result_lengths: jax.Array, num_answers: int
    ) -> jax.Array:
        """values[:, :result_length], the terminator, then 0s: [B, num_answers] int32."""
        slot = jnp.arange(num_answers)[None, :]
        body = gather_columns(values, slot)
        ends = result_lengths[:, None]
        return jnp.where(slot < ends, body, jnp.where(slot == ends, self.terminator, 0)).astype(
            jnp.int32
        )


def gather_columns(values: jax.Array, index: jax.Array) -> jax.Array:
    """values[b, index[b, j]] for values [B, W] and int index [B, J] -> [B, J].

    The index is clipped into [0, W). Samplers compute indices for every padded slot, and only
    slots that a mask later discards can fall outside; every read that is kept is in range."""
    return jnp.take_along_axis(values, jnp.clip(index, 0, values.shape[1] - 1), axis=1)


def reversed_prefix(values: jax.Array, lengths: jax.Array) -> jax.Array:
    """Each row's first lengths[b] entries in reverse order, [B, W] -> [B, W] (entries past a
    row's length are filler for masked slots)."""
    index = jnp.arange(values.shape[1])[None, :]
    return gather_columns(values, lengths[:, None] - 1 - index)


def column_uniform(key: jax.Array, batch: int, padded_len: int) -> jax.Array:
    """[batch, padded_len] float32 uniform on [0, 1), drawn column by column.

    Column i comes from fold_in(key, i), so the first n columns do not depend on padded_len: an
    example of length n is the same whatever bucket evaluation pads it into.
    """

    def draw(i):
        return jax.random.uniform(jax.random.fold_in(key, i), (batch,))

    return jax.vmap(draw, out_axes=1)(jnp.arange(padded_len))


def uniform_tokens(key: jax.Array, batch: int, padded_len: int, vocab_size: int) -> jax.Array:
    """[batch, padded_len] int32 tokens uniform on [0, vocab_size), drawn column by column like
    `column_uniform`, so they do not depend on padded_len either."""

    def draw(i):
        return jax.random.randint(jax.random.fold_in(key, i), (batch,), 0, vocab_size)

    return jax.vmap(draw, out_axes=1)(jnp.arange(padded_len)).astype(jnp.int32)


def layout(
    content: jax.Array,
    answers: jax.Array,
    lengths: jax.Array,
    answer_lengths: jax.Array,
    causal: bool,
    scored: jax.Array | None = None,
) -> Batch:
    """Place content [B, N] and answers [B, M] into the shared [B, N + M] layout (see module doc).

    `scored` [B, M] bool marks the answers that count (default: all); the others still occupy
    their slots, as inputs in decoder mode, but are not targets."""
    batch, padded_len = content.shape
    max_answers = answers.shape[1]
    slot = jnp.arange(padded_len + max_answers)[None, :]
    n = lengths[:, None]
    is_content = slot < n
    answer_index = slot - n  # j for the slot holding target y_{j+1}
    is_answer = (answer_index >= 0) & (answer_index < answer_lengths[:, None])
    content_ids = gather_columns(content, slot)
    targets = gather_columns(answers, answer_index)
    if causal:
        previous = gather_columns(answers, answer_index - 1)
        answer_inputs = jnp.where(answer_index == 0, ANSWER_ID, previous + NUM_SPECIAL)
    else:
        answer_inputs = jnp.full_like(targets, ANSWER_ID)
    inputs = jnp.where(
        is_content, content_ids + NUM_SPECIAL, jnp.where(is_answer, answer_inputs, PAD_ID)
    )
    token_mask = is_content | is_answer
    target_mask = is_answer
    if scored is not None:
        target_mask = is_answer & gather_columns(scored, answer_index)
    return Batch(
        inputs=inputs.astype(jnp.int32),
        positions=jnp.where(token_mask, slot, 0).astype(jnp.int32),
        targets=jnp.where(target_mask, targets, 0).astype(jnp.int32),
        target_mask=target_mask,
        token_mask=token_mask,
        lengths=lengths.astype(jnp.int32),
    )
