"""Bad input through the user's path, `posenc-train` with Hydra overrides: each case ends
before anything compiles with one paragraph that names the value and what would be valid, a
non-zero exit status, no traceback, and no run folder left behind (issue 14's list)."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import pytest

from posenc_jax.cli import main
from posenc_jax.encodings import REGISTRY as ENCODINGS
from posenc_jax.errors import ConfigError
from posenc_jax.train import batch_counts, init_state, training_batches

from helpers import compose_config, make_settings, modes, run_in_process, task_for

# (overrides, exit status, what the message must say). Hydra itself refuses an unknown group
# choice (status 1, with its list of choices); every other case is ours (status 2).
CASES = {
    "unknown encoding": (["encoding=fourier"], 1, "Could not find 'encoding/fourier'"),
    "unknown task": (["task=sorting"], 1, "Could not find 'task/sorting'"),
    "unknown key": (
        ["model.width=3"],
        2,
        "Unknown key(s) ['width'] in section 'model' (model.width=3); valid keys are ['d_model'",
    ),
    "unknown key of the chosen encoding": (
        ["encoding=alibi", "encoding.base=5"],
        2,
        "Unknown key(s) ['base'] in section 'encoding' (encoding.base=5); valid keys are "
        "['name', 'randomized', 'max_position']",
    ),
    "unknown key, appended": (
        ["+model.width=3"],
        2,
        "Unknown key(s) ['width'] in section 'model'; valid keys are ['d_model', 'num_heads'",
    ),
    "a group given a number": (
        ["encoding=5"],
        2,
        "encoding=5 does not name one config of group 'encoding'; choose one by name",
    ),
    "a group given a list": (
        ["encoding=[rope,alibi]"],
        2,
        "encoding=[rope,alibi] does not name one config of group 'encoding'",
    ),
    "a section given a value": (["train=5"], 2, "train=5 is not a section of settings"),
    "wrong type": (
        ["model.d_model=sixty"],
        2,
        "posenc-train: model.d_model='sixty' in section 'model' has the wrong type: expected int",
    ),
    "wrong type, a float for an int": (
        ["train.steps=1.5"],
        2,
        "posenc-train: train.steps=1.5 in section 'train' has the wrong type: expected int",
    ),
    "not a choice": (
        ["model.norm=mid"],
        2,
        "posenc-train: model.norm='mid' in section 'model' is unknown; valid choices are "
        "['pre', 'post']",
    ),
    "heads that do not divide d_model": (
        ["model.d_model=30", "model.num_heads=4"],
        2,
        "model.d_model=30 is not divisible by model.num_heads=4; each head needs",
    ),
    "odd rotary head dimension": (
        ["encoding=rope", "model.d_model=36", "model.num_heads=4"],
        2,
        "RoPE rotates pairs of dimensions, but the head dimension is odd",
    ),
    "train_min_len above train_max_len": (
        ["task.train_min_len=8", "task.train_max_len=6"],
        2,
        "task.train_min_len=8 and task.train_max_len=6 must satisfy 2 <= train_min_len",
    ),
    "eval.max_len below the training length": (
        ["task.train_max_len=16", "eval.max_len=10"],
        2,
        "eval.max_len=10 is below the training length task.train_max_len=16",
    ),
    "learned table too short for training": (
        ["encoding=learned", "encoding.table_size=8"],
        2,
        "train_max_len=16 needs 17 positions",
    ),
    "vocabulary too small": (
        ["task=word_order", "task.vocab_size=1"],
        2,
        "task.vocab_size=1 must be at least 2",
    ),
    "too few keys for the lengths": (
        ["task=associative_recall", "task.num_keys=3"],
        2,
        "Task 'associative_recall' can generate inputs of at most 8 tokens",
    ),
    "a task parameter that once divided by zero": (
        ["task=sort", "task.digits=0"],
        2,
        "task.digits=0 must be between 1 and 9",
    ),
    "zero d_model": (["model.d_model=0"], 2, "model.d_model=0 must be positive"),
    "negative layers": (["model.num_layers=-1"], 2, "model.num_layers=-1 must be positive"),
    "zero steps": (["train.steps=0"], 2, "train.steps=0 must be positive"),
    "negative batch": (["train.batch_size=-1"], 2, "train.batch_size=-1 must be positive"),
    "zero examples per length": (
        ["eval.examples_per_length=0"],
        2,
        "eval.examples_per_length=0 must be positive",
    ),
    "zero learning rate": (
        ["optim.learning_rate=0"],
        2,
        "optim.learning_rate=0.0 must be positive and finite",
    ),
    "negative learning rate": (
        ["optim.learning_rate=-0.001"],
        2,
        "optim.learning_rate=-0.001 must be positive and finite",
    ),
    "infinite rope base": (
        ["encoding=rope", "encoding.base=inf"],
        2,
        "encoding.base=inf must be finite and greater than 1",
    ),
    "overwrite not a boolean": (["overwrite=maybe"], 2, "overwrite='maybe' must be true or false"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_in_one_paragraph_leaving_no_folder(case, tmp_path, capsys):
    overrides, status, message = CASES[case]
    run_dir = tmp_path / "run"
    code, out, err = run_in_process(main, [f"hydra.run.dir={run_dir}", *overrides], capsys)
    assert code == status, err
    assert message in err, err
    assert "Traceback" not in err + out
    if status == 2:  # ours: the whole message is one paragraph after the command's name
        assert err.startswith("posenc-train: ") and err.count("\n") == 1, err
    assert not run_dir.exists()


def test_a_full_traceback_is_shown_when_asked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    argv = [f"hydra.run.dir={tmp_path / 'run'}", "model.d_model=0"]
    code, _, err = run_in_process(main, argv, capsys)
    assert code == 2
    assert err.startswith("Traceback") and "ConfigError: model.d_model=0 must be positive" in err
    assert err.endswith("posenc-train: model.d_model=0 must be positive.\n")


def _fitting(encoding: str) -> list[str]:
    """Encoding `encoding` in a mode and on a task it accepts."""
    causal = modes(encoding)[0]
    return [f"encoding={encoding}", f"model.causal={causal}", f"task={task_for(encoding, 'copy')}"]


def _numeric_parameters():
    """(encoding, field) for every number an encoding's YAML can set."""
    for name, spec in sorted(ENCODINGS.items()):
        defaults = make_settings(*_fitting(name)).encoding
        in_yaml = set(compose_config([f"encoding={name}"]).encoding)
        for field in dataclasses.fields(spec):
            if field.name in in_yaml and type(getattr(defaults, field.name)) in (int, float):
                yield name, field.name


@pytest.mark.parametrize("name, field", list(_numeric_parameters()))
def test_every_encoding_number_is_refused_by_name_or_trains_finite(name, field):
    """At -1, 0, NaN and inf, each numeric parameter of each encoding is either a ConfigError
    that names it, or gives a finite loss: sinusoidal's base once took 0, FIRE's init_c NaN and
    RoPE's original_max_len -1 without a word."""
    for value in ("-1", "0", "nan", "inf"):
        try:
            settings = make_settings(*_fitting(name), f"encoding.{field}={value}")
        except ConfigError as error:
            assert f"{field}=" in str(error), (value, str(error))
            continue
        graphdef, state, _ = init_state(settings)
        batch = training_batches(settings, state.data_key, jnp.int32(0))[0]
        counts = jax.jit(batch_counts, static_argnums=0)(graphdef, state.params, batch)
        assert math.isfinite(float(counts.nll.sum())), value


@pytest.mark.parametrize(
    "folder, message",
    [
        ("a_file", "is a file, or lies under one"),
        ("a_file/run", "is a file, or lies under one"),
        ("x" * 300, "cannot be a folder here (File name too long)"),
    ],
)
def test_a_run_folder_that_cannot_be_one_is_refused(tmp_path, capsys, folder, message):
    """Hydra would answer with a raw FileExistsError, NotADirectoryError or OSError."""
    (tmp_path / "a_file").write_text("mine")
    code, _, err = run_in_process(main, [f"hydra.run.dir={tmp_path / folder}"], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_refusal_removes_the_folders_hydra_made_and_no_other(tmp_path, capsys):
    """Hydra makes the run folder, and its missing parents, before posenc-train can refuse:
    those go, and an empty folder that existed before stays."""
    existing = tmp_path / "existing"
    existing.mkdir()
    for run_dir in (existing, tmp_path / "new" / "deeper" / "run"):
        code, _, err = run_in_process(main, [f"hydra.run.dir={run_dir}", "train.steps=0"], capsys)
        assert code == 2 and "train.steps=0 must be positive" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"] and existing.is_dir()


def test_an_empty_run_folder_is_refused_not_the_current_directory(capsys):
    code, _, err = run_in_process(main, ["hydra.run.dir="], capsys)
    assert code == 2 and "hydra.run.dir= is empty" in err


def test_a_refusal_into_a_path_with_dot_dot_removes_only_what_hydra_made(tmp_path, capsys):
    (tmp_path / "existing").mkdir()
    for folder in ("new/../existing", "existing/new/.."):
        argv = [f"hydra.run.dir={tmp_path / folder}", "train.steps=0"]
        code, _, err = run_in_process(main, argv, capsys)
        assert code == 2 and "train.steps=0 must be positive" in err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["existing"]


def test_a_refused_sweep_leaves_no_sweep_folder(tmp_path, capsys):
    argv = ["-m", f"hydra.sweep.dir={tmp_path / 'new' / 'sweep'}", "seed=0,1", "train.steps=0"]
    code, _, err = run_in_process(main, argv, capsys)
    assert code == 2 and "train.steps=0 must be positive" in err
    assert list(tmp_path.iterdir()) == []


def test_a_glob_sweep_of_encodings_is_not_mistaken_for_a_bad_choice(tmp_path):
    """encoding='glob(...)' is Hydra's sweep over the group's files: the override checks let it
    through (it once raised Hydra's 'ConfigLoader is not set' with a traceback)."""
    from posenc_jax.cli import config_dir
    from posenc_jax.overrides import check_overrides

    argv = ["-m", "encoding=glob(*,exclude=[fox])", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert check_overrides(config_dir(), "train", argv) == [tmp_path / "sweep"]
