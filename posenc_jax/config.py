"""Plain, frozen dataclasses for every setting of a run.

Hydra stays at the edge: `settings_from_dict` turns the composed config (a plain dict) into
`Settings`, validates every value, and raises `ConfigError` with a readable paragraph before
anything is compiled. Nothing jitted ever sees a DictConfig.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from posenc_jax.decoding import DECODINGS, DEFAULT_DECODING
from posenc_jax.encodings import EncodingSpec, make_encoding
from posenc_jax.encodings.base import DigitPositions
from posenc_jax.errors import (
    ConfigError,
    require_finite_at_least,
    require_int,
    require_positive,
    require_positive_finite,
    require_seed,
)
from posenc_jax.length_buckets import (
    MAX_PASSES_PER_STEP,
    passes_per_step,
    run_buckets,
    smallest_microbatch,
)
from posenc_jax.model_config import ModelConfig
from posenc_jax.spec import choice, construct
from posenc_jax.tasks import REGISTRY as TASKS
from posenc_jax.tasks import TaskSpec, make_task
from posenc_jax.tasks.base import NumberTask

# Warm-up steps by default: enough for Adam's second moments to settle on this model size.
DEFAULT_WARMUP_STEPS = 200


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up, cosine decay and global-norm gradient clipping."""

    learning_rate: float = 1e-3
    # None: DEFAULT_WARMUP_STEPS, capped at a tenth of the run so that a short run just works.
    warmup_steps: int | None = None
    final_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.98
    grad_clip: float = 1.0

    def warmup(self, total_steps: int) -> int:
        """The warm-up length: warmup_steps if given, else min(DEFAULT_WARMUP_STEPS,
        total_steps // 10)."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(DEFAULT_WARMUP_STEPS, total_steps // 10)

    def validate(self, total_steps: int) -> None:
        # Each bound is what optax needs to do what the name says: a clip <= 0 would flip or zero
        # every gradient, and a beta outside [0, 1) makes Adam's moments diverge.
        require_positive_finite("optim.learning_rate", self.learning_rate)
        require_positive_finite("optim.grad_clip", self.grad_clip)
        for name, beta in (("optim.b1", self.b1), ("optim.b2", self.b2)):
            if not 0.0 <= beta < 1.0:
                raise ConfigError(f"{name}={beta} must lie in [0, 1).")
        require_finite_at_least("optim.weight_decay", self.weight_decay, 0.0)
        # The cosine decay after the warm-up needs at least one step.
        if self.warmup_steps is not None and not 0 <= self.warmup_steps < total_steps:
            raise ConfigError(
                f"optim.warmup_steps={self.warmup_steps} must lie in [0, train.steps="
                f"{total_steps}), leaving at least one step of decay; choose one in that range "
                f"(e.g. optim.warmup_steps={total_steps // 10}), or leave it unset (null) for "
                f"min({DEFAULT_WARMUP_STEPS}, train.steps // 10)."
            )
        if not 0.0 <= self.final_lr_ratio <= 1.0:
            raise ConfigError(f"optim.final_lr_ratio={self.final_lr_ratio} must lie in [0, 1].")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    batch_size: int = 128
    log_every: int = 100
    # Steps fused into one jitted `lax.scan`: fewer dispatches, same numbers.
    steps_per_dispatch: int = 10
    # Independent replicas trained side by side under jax.vmap, seeds seed..seed+num_seeds-1
    # (`seeds.py`): one compilation for all of them.
    num_seeds: int = 1
    # Ranges of training lengths, each a group of every step's examples padded only to its
    # longest length (`length_buckets.py`); 1 pads every step to task.train_max_len.
    length_buckets: int = 1
    # Several devices (`sharding.py`): split each batch ("data") or the replicas ("seeds")
    # over them; None uses one device.
    sharding: str | None = choice(None, ("data", "seeds"))
    # Several processes, one run (`distributed.py`): join the processes a cluster launcher
    # (srun, mpirun) started, whose devices then form train.sharding's mesh together.
    distributed: bool = False
    # Examples per forward-and-backward pass inside a step (`train.microbatches`; at most
    # `length_buckets.MAX_PASSES_PER_STEP` passes a step); None: each length bucket's examples
    # in one pass. Changes rounding only, not the loss or the data.
    microbatch: int | None = None
    # Training checkpoints to resume from (`checkpoint.TrainingCheckpoints`): at the first log
    # step of every checkpoint_every steps (None: none before the end) and at the end, keeping
    # the newest checkpoints_to_keep.
    checkpoint_every: int | None = 1000
    checkpoints_to_keep: int = 2
    # The matmuls' dtype (`model.py`); parameters, optimizer state, softmax, norms and the loss
    # stay float32 either way.
    dtype: str = choice("float32", ("float32", "bfloat16"))

    def validate(self) -> None:
        for key in ("steps", "batch_size", "log_every", "steps_per_dispatch"):
            require_positive(f"train.{key}", getattr(self, key))
        require_int("train.num_seeds", self.num_seeds, 1)
        if self.microbatch is not None:
            require_int("train.microbatch", self.microbatch, 1)
        require_int("train.checkpoints_to_keep", self.checkpoints_to_keep, 1)
        if self.checkpoint_every is not None:
            require_int("train.checkpoint_every", self.checkpoint_every, 1)
        if self.distributed and self.sharding is None:
            raise ConfigError(
                "train.distributed=true spreads one run over several processes' devices, but "
                "train.sharding=null would leave every process to train the whole run alone; "
                "choose train.sharding=data (split each batch) or train.sharding=seeds (split "
                "the replicas of train.num_seeds)."
            )
        if self.log_every % self.steps_per_dispatch:
            raise ConfigError(
                f"train.log_every={self.log_every} is not a multiple of train.steps_per_dispatch="
                f"{self.steps_per_dispatch}; logging happens between dispatches, so choose a log "
                f"interval that is a multiple of the dispatch size (or set steps_per_dispatch=1)."
            )


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Per-length evaluation. `max_len=None` means 4 × task.train_max_len; `min_len=None` means
    task.train_min_len. Attention maps are drawn for one input length, `attention_len`
    (None = the longest length evaluated), and also saved as PNG if `save_attention`.
    `decoding` is how a decoder's answers are produced (`posenc_jax.decoding`): "greedy" or
    "teacher_forced"; None means greedy for a decoder, and an encoder takes none."""

    max_len: int | None = None
    min_len: int | None = None
    examples_per_length: int = 256
    seed: int = 0  # fixed across runs, so every run of a sweep is scored on the same examples
    attention_len: int | None = None
    save_attention: bool = False
    decoding: str | None = choice(None, DECODINGS)

    def validate(self) -> None:
        require_positive("eval.examples_per_length", self.examples_per_length)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a run depends on. A run is a pure function of these settings."""

    seed: int
    model: ModelConfig
    encoding: EncodingSpec
    task: TaskSpec
    optim: OptimConfig
    train: TrainConfig
    eval: EvalConfig

    @property
    def eval_min_len(self) -> int:
        return self.task.train_min_len if self.eval.min_len is None else self.eval.min_len

    @property
    def eval_max_len(self) -> int:
        return 4 * self.task.train_max_len if self.eval.max_len is None else self.eval.max_len

    @property
    def scoring(self) -> str:
        """How evaluation produces the answers it scores: "encoder", or a decoder's
        eval.decoding ("greedy" unless set)."""
        if not self.model.causal:
            return "encoder"
        return self.eval.decoding or DEFAULT_DECODING

    def validate(self) -> None:
        self.model.validate()
        self.train.validate()
        self.optim.validate(self.train.steps)
        self.eval.validate()
        self.task.validate()
        self.encoding.validate(self.model)
        self._validate_digit_roles()
        if not self.task.min_input_len <= self.eval_min_len <= self.eval_max_len:
            raise ConfigError(
                f"eval.min_len={self.eval_min_len} and eval.max_len={self.eval_max_len} do not "
                f"form a range of lengths for task {self.task.name!r}: need "
                f"{self.task.min_input_len} <= eval.min_len <= eval.max_len."
            )
        if self.eval.decoding is not None and not self.model.causal:
            raise ConfigError(
                f"eval.decoding={self.eval.decoding} applies to decoders (model.causal=true) "
                f"only: an encoder reads all its answer slots in one pass and feeds nothing "
                f"back. Leave eval.decoding unset (null), or train a decoder (model.causal=true)."
            )
        training_lengths = self.task.train_max_len - self.task.train_min_len + 1
        most = min(training_lengths, self.train.batch_size, MAX_PASSES_PER_STEP)
        count = self.train.length_buckets
        if type(count) is not int or not 1 <= count <= most:
            valid = "1 (one bucket)" if most == 1 else f"an integer from 1 to {most}"
            raise ConfigError(
                f"train.length_buckets={count!r} cannot cut the {training_lengths} training "
                f"length(s) (task.train_min_len={self.task.train_min_len} to "
                f"task.train_max_len={self.task.train_max_len}) and the "
                f"train.batch_size={self.train.batch_size} examples of a step into that many "
                f"non-empty buckets, each a pass compiled on its own (at most "
                f"{MAX_PASSES_PER_STEP} a step); choose {valid}."
            )
        self._validate_passes_per_step()
        if self.eval.attention_len is not None:
            self._validate_attention_len(self.eval.attention_len)
        longest = max(self.task.train_max_len, self.eval_max_len)
        if self.task.max_input_len is not None and longest > self.task.max_input_len:
            raise ConfigError(
                f"Task {self.task.name!r} can generate inputs of at most "
                f"{self.task.max_input_len} tokens with its parameters, but training or "
                f"evaluation asks for {longest} (task.train_max_len={self.task.train_max_len}, "
                f"eval.max_len={self.eval_max_len}). Lower them, or change the task's parameters "
                f"(see its YAML)."
            )
        if self.eval_max_len < self.task.train_max_len:
            # Lengths past eval.max_len would go unscored: acc_id would cover part of the
            # training range and acc_ood none, with nothing in the results to say so.
            raise ConfigError(
                f"eval.max_len={self.eval_max_len} is below the training length "
                f"task.train_max_len={self.task.train_max_len}, so evaluation would miss trained "
                f"lengths and every longer one. Choose eval.max_len >= "
                f"{self.task.train_max_len} (equal scores the training range only), or leave it "
                f"unset (null) for 4 × task.train_max_len = {4 * self.task.train_max_len}."
            )
        # Training must fit the encoding; evaluation lengths past it are reported, not fatal.
        train_positions = self.positions_needed(self.task.train_max_len, training=True)
        if not self.encoding.represents(train_positions):
            raise ConfigError(
                f"task.train_max_len={self.task.train_max_len} needs {train_positions} positions "
                f"(0 .. {train_positions - 1}: the input and answer slots, or for abacus and "
                f"coupled the largest digit id, with abacus's encoding.max_offset), but encoding "
                f"{self.encoding.name!r} represents only {self.encoding.num_positions}. Raise the "
                f"encoding's limit (encoding.table_size for a learned or Abacus table, "
                f"encoding.max_position for randomized positions or coupling) or shorten training."
            )

    def _validate_digit_roles(self) -> None:
        """An encoding that places positions by digit roles needs a task that gives them."""
        missing = self.task.why_no_digit_roles()
        if not isinstance(self.encoding, DigitPositions) or missing is None:
            return
        givers = [name for name, cls in TASKS.items() if issubclass(cls, NumberTask)]
        raise ConfigError(
            f"encoding={self.encoding.name} places positions by each digit's place in its "
            f"number, which the task must give, but {missing}. Tasks that give it: {givers}."
        )

    def _validate_passes_per_step(self) -> None:
        buckets = run_buckets(self)
        microbatch = self.train.microbatch
        passes = passes_per_step(buckets, microbatch)
        if passes <= MAX_PASSES_PER_STEP:
            return
        cost = (
            "each is compiled on its own, so compilation grows with their number (the default "
            "job: 2.4 s as one pass, 21.6 s as 32, 198 s as 128)"
        )
        smallest = smallest_microbatch(buckets)
        raise ConfigError(
            f"train.microbatch={microbatch} cuts every training step into {passes} passes "
            f"(train.batch_size={self.train.batch_size} in {len(buckets)} length bucket(s)); "
            f"{cost}. At most {MAX_PASSES_PER_STEP} are allowed: choose train.microbatch >= "
            f"{smallest}, or leave it unset (null) for one pass per bucket."
        )

    def positions_needed(self, n: int, training: bool = False) -> int:
        """Positions (0 .. that − 1) an example of input length n may use, in training or in
        evaluation (`EncodingSpec.positions_needed`)."""
        return self.encoding.positions_needed(self.task, n, self.model.causal, training)

    def represents_length(self, n: int) -> bool:
        """Whether the encoding can represent every position of an evaluated input length n."""
        return self.encoding.represents(self.positions_needed(n))

    def _validate_attention_len(self, length: int) -> None:
        """eval.attention_len must be an evaluated length that the encoding represents."""
        if not self.eval_min_len <= length <= self.eval_max_len:
            raise ConfigError(
                f"eval.attention_len={length} is not an evaluated length; choose "
                f"one from eval.min_len={self.eval_min_len} to eval.max_len={self.eval_max_len}, "
                f"or null for the longest."
            )
        if not self.represents_length(length):
            raise ConfigError(
                f"eval.attention_len={length} needs {self.positions_needed(length)} positions, "
                f"more than encoding {self.encoding.name!r} represents "
                f"({self.encoding.num_positions}); choose a shorter length, or null for the "
                f"longest it represents."
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, with the derived values (eval range, warm-up) filled in."""
        out = {
            "seed": self.seed,
            "model": dataclasses.asdict(self.model),
            "encoding": self.encoding.to_dict(),
            "task": self.task.to_dict(),
            "optim": dataclasses.asdict(self.optim),
            "train": dataclasses.asdict(self.train),
            "eval": dataclasses.asdict(self.eval),
        }
        out["eval"].update(min_len=self.eval_min_len, max_len=self.eval_max_len)
        out["optim"]["warmup_steps"] = self.optim.warmup(self.train.steps)
        return out


# Settings added after runs were first recorded, with the value every earlier run had: a stored
# config.yaml that lacks one ran with it (posenc-eval and posenc-report read old runs this way).
ADDED_SETTINGS = {
    "train.num_seeds": 1,
    "train.length_buckets": 1,
    "train.sharding": None,
    "train.dtype": "float32",
    "train.microbatch": None,
    "train.distributed": False,
    "train.checkpoint_every": None,
    "train.checkpoints_to_keep": 1,
}


def with_added_settings(flat: dict[str, Any]) -> dict[str, Any]:
    """`flat` (a config as dotted keys) with every `ADDED_SETTINGS` key it lacks set to the
    value runs had before that setting existed."""
    return {**ADDED_SETTINGS, **flat}


def settings_from_dict(raw: Mapping[str, Any]) -> Settings:
    """Build and validate `Settings` from a plain nested dict (e.g. a resolved Hydra config)."""
    raw = dict(raw)
    sections = {
        "model": ModelConfig,
        "optim": OptimConfig,
        "train": TrainConfig,
        "eval": EvalConfig,
    }
    parts = {
        key: construct(cls, _section(raw, key), f"section {key!r}", prefix=key)
        for key, cls in sections.items()
    }
    seed = raw.get("seed", 0)
    require_seed("seed", seed)
    if parts["train"].num_seeds > 1:
        last_seed = seed + parts["train"].num_seeds - 1
        require_seed("seed + train.num_seeds - 1 (the last replica's seed)", last_seed)
    require_seed("eval.seed", parts["eval"].seed)
    task = make_task(_section(raw, "task"))
    task.validate()  # before its lengths are used below: a bad parameter may divide by zero
    encoding = make_encoding(_section(raw, "encoding"))
    # Positions seen in training: 0 .. max_position-1 when randomized, else the longest example.
    trained = (
        encoding.max_position if encoding.randomized else task.sequence_len(task.train_max_len)
    )
    settings = Settings(
        seed=seed, encoding=encoding.with_trained_length(trained), task=task, **parts
    )
    settings.validate()
    return settings


def _section(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    """raw[key] as a dict of settings ({} if absent); ConfigError if it is not a mapping."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{key}={value!r} is not a section of settings; set its keys one by one instead "
            f"(e.g. {key}.<key>=<value>; posenc-train --help lists them)."
        )
    return dict(value)
