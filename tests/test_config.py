"""Bad settings fail before anything compiles, in one paragraph naming the value and the choices."""

import pytest
from omegaconf import OmegaConf

from posenc_jax.config import settings_from_dict
from posenc_jax.encodings import available, make_encoding
from posenc_jax.errors import ConfigError

from helpers import compose_config, make_settings


def test_defaults_compose_to_the_documented_run():
    settings = make_settings(fast=False)
    assert (settings.encoding.name, settings.task.name) == ("rope", "word_order")
    assert (settings.model.num_layers, settings.model.causal) == (2, False)
    assert settings.eval_max_len == 4 * settings.task.train_max_len


def test_unknown_encoding_names_the_valid_choices():
    with pytest.raises(ConfigError) as error:
        make_encoding({"name": "fourier"})
    assert "'fourier'" in str(error.value) and str(available()) in str(error.value)


def test_unknown_encoding_parameter_names_the_valid_parameters():
    with pytest.raises(
        ConfigError,
        match=r"Unknown key\(s\) \['theta'\] in encoding 'rope'; valid keys are "
        r"\['randomized', 'max_position', 'base', 'layout', 'scaling', 'scale', "
        r"'original_max_len', 'fraction', 'partial'\]",
    ):
        make_encoding({"name": "rope", "theta": 500000.0})


def test_heads_must_divide_d_model():
    with pytest.raises(
        ConfigError,
        match=r"d_model=32 is not divisible by model.num_heads=5.*\[1, 2, 4, 8, 16, 32\]",
    ):
        make_settings("model.num_heads=5")


def test_unknown_section_key_is_rejected_outside_hydra_too():
    raw = {"encoding": {"name": "nope"}, "task": {"name": "copy"}, "model": {"depth": 3}}
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['depth'\] in section 'model'"):
        settings_from_dict(raw)


def test_wrong_value_type_is_a_clear_error():
    with pytest.raises(
        ConfigError, match=r"d_model='sixty' in section 'model' has the wrong type: expected int"
    ):
        make_settings("model.d_model=sixty")
    with pytest.raises(
        ConfigError,
        match=r"encoding.base='large' in encoding 'rope' has the wrong type: expected float",
    ):
        make_settings("encoding.base=large")
    assert make_settings("eval.max_len=null").eval.max_len is None
    assert make_settings("encoding.base=500").encoding.base == 500.0


CHOICE_FIELDS = [
    ([], "model", "norm", "section 'model'", ["pre", "post"]),
    (["encoding=rope"], "encoding", "layout", "encoding 'rope'", ["interleaved", "half"]),
    (
        ["encoding=rope"],
        "encoding",
        "scaling",
        "encoding 'rope'",
        ["none", "pi", "ntk", "dynamic_ntk", "yarn", "yarn_paper"],
    ),
    (["encoding=kerple"], "encoding", "variant", "encoding 'kerple'", ["log", "power"]),
    (["task=addition"], "task", "digit_order", "task 'addition'", ["msd", "lsd"]),
    (["model.causal=true"], "eval", "decoding", "section 'eval'", ["greedy", "teacher_forced"]),
    (["train.num_seeds=2"], "train", "sharding", "section 'train'", ["data", "seeds"]),
]
OPTIONAL = {"decoding", "sharding"}  # null is a valid value too


@pytest.mark.parametrize("context, section, key, where, choices", CHOICE_FIELDS)
@pytest.mark.parametrize("value, problem", [("bogus", "is unknown"), ("1", "has the wrong type")])
def test_a_field_with_choices_names_them_for_a_wrong_value_or_type(
    context, section, key, where, choices, value, problem
):
    with pytest.raises(ConfigError) as error:
        make_settings(*context, f"{section}.{key}={value}")
    message = str(error.value)
    assert message.startswith(
        f"{section}.{key}={value if value == '1' else repr(value)} in {where} {problem}"
    )
    assert message.endswith(f"valid choices are {choices}{', or null' * (key in OPTIONAL)}.")
    for valid in choices:  # every choice is accepted
        make_settings(*context, f"{section}.{key}={valid}", *_needed_with(key, valid))


def _needed_with(key: str, value: str) -> list[str]:
    """Settings a valid choice needs to be complete (a RoPE rule needs a scale > 1)."""
    return ["encoding.scale=2"] if key == "scaling" and value != "none" else []


def test_training_longer_than_a_learned_table_is_an_error():
    with pytest.raises(ConfigError, match=r"train_max_len=6 needs 7 positions.*represents only 4"):
        make_settings("encoding=learned", "encoding.table_size=4")


def test_log_interval_must_be_a_multiple_of_dispatch_size():
    with pytest.raises(
        ConfigError, match=r"log_every=7 is not a multiple of train.steps_per_dispatch=5"
    ):
        make_settings("train.log_every=7")


def test_eval_range_must_be_ordered():
    with pytest.raises(ConfigError, match=r"eval.min_len=10 and eval.max_len=8"):
        make_settings("eval.min_len=10", "eval.max_len=8")


def test_yaml_defaults_equal_dataclass_defaults():
    """configs/ and the dataclasses must not drift apart: library users get what CLI users get."""
    from posenc_jax.config import EvalConfig, OptimConfig, TrainConfig
    from posenc_jax.encodings import REGISTRY as ENCODINGS
    from posenc_jax.model_config import ModelConfig
    from posenc_jax.tasks import REGISTRY as TASKS

    settings = make_settings(fast=False)
    assert settings.model == ModelConfig()
    assert settings.optim == OptimConfig()
    assert settings.train == TrainConfig()
    assert settings.eval == EvalConfig()
    for name, spec in ENCODINGS.items():  # as composed, before the run fills in derived values
        composed = OmegaConf.to_container(compose_config([f"encoding={name}"]).encoding)
        assert make_encoding(composed) == spec(), name
    for name, spec in TASKS.items():
        assert make_settings(f"task={name}", fast=False).task == spec(), name


def test_every_config_file_names_itself_and_a_registered_component():
    from pathlib import Path

    import yaml

    from posenc_jax import encodings, tasks
    from posenc_jax.cli import config_dir

    for group, names in (("encoding", encodings.available()), ("task", tasks.available())):
        files = sorted(Path(config_dir(), group).glob("*.yaml"))
        assert [f.stem for f in files] == names, group
        for f in files:
            assert yaml.safe_load(f.read_text())["name"] == f.stem, f


def test_attention_length_must_be_evaluated_and_representable():
    with pytest.raises(
        ConfigError, match=r"eval.attention_len=40 is not an evaluated length.*eval.max_len=12"
    ):
        make_settings("eval.attention_len=40")
    with pytest.raises(
        ConfigError, match=r"eval.attention_len=12 needs 13 positions.*'learned' represents \(8\)"
    ):
        make_settings("encoding=learned", "encoding.table_size=8", "eval.attention_len=12")


def test_a_short_run_works_with_the_default_warmup():
    """`posenc-train train.steps=20` must just run: the default warm-up is capped at a tenth."""
    short = make_settings("train.steps=20", fast=False)
    assert short.optim.warmup_steps is None and short.optim.warmup(20) == 2
    assert short.to_dict()["optim"]["warmup_steps"] == 2  # recorded in config.yaml
    assert make_settings(fast=False).to_dict()["optim"]["warmup_steps"] == 200  # 3000 steps


def test_an_explicit_warmup_longer_than_the_run_is_a_clear_error():
    expected = r"optim.warmup_steps=50 must lie in \[0, train.steps=20\).*leave it unset \(null\)"
    with pytest.raises(ConfigError, match=expected):
        make_settings("train.steps=20", "optim.warmup_steps=50")
    # All warm-up and no decay: optax's cosine decay needs a step, so this is refused too.
    with pytest.raises(
        ConfigError, match=r"optim.warmup_steps=20 must lie in \[0, train.steps=20\)"
    ):
        make_settings("train.steps=20", "optim.warmup_steps=20")


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.grad_clip=0", r"optim.grad_clip=0.0 must be positive and finite"),  # zeroes steps
        ("optim.grad_clip=-1", r"optim.grad_clip=-1.0 must be positive"),  # gradient ascent
        ("optim.grad_clip=nan", r"optim.grad_clip=nan must be positive and finite"),
        ("optim.learning_rate=inf", r"optim.learning_rate=inf must be positive and finite"),
        ("optim.b1=1.0", r"optim.b1=1.0 must lie in \[0, 1\)"),
        ("optim.b2=-0.5", r"optim.b2=-0.5 must lie in \[0, 1\)"),
        ("optim.weight_decay=-0.01", r"optim.weight_decay=-0.01 must be finite and at least 0.0"),
        ("seed=-1", r"seed=-1 must be an integer in \[0, 2\^63\)"),
        ("seed=99999999999999999999", r"seed=99999999999999999999 must be an integer"),
        ("eval.seed=99999999999999999999", r"eval.seed=99999999999999999999 must be an integer"),
        ("train=5", r"train=5 is not a section of settings; set its keys one by one"),
    ],
)
def test_values_optax_or_jax_cannot_use_are_refused_before_anything_runs(override, message):
    with pytest.raises(ConfigError, match=message):
        make_settings(override)
