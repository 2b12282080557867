"""A short run through the user's path writes every promised file with the promised keys."""

import io
import json
import os
import subprocess
import sys

import jax
import matplotlib.image
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from posenc_jax.checkpoint import restore_params
from posenc_jax.cli import main
from posenc_jax.errors import ConfigError
from posenc_jax.evaluate import attention_maps, length_buckets
from posenc_jax.run import run

from helpers import FAST, make_settings, run_in_process


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    settings = make_settings("encoding=rope", "task=word_order")
    results = run(settings, run_dir, show_progress=False)
    return run_dir, results


def test_results_json_has_the_promised_keys(finished_run):
    run_dir, returned = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    assert results["status"] == "completed"
    ev, tr = results["eval"], results["train"]
    assert ev["lengths"] == list(range(2, 13))
    assert len(ev["token_acc"]) == len(ev["seq_acc"]) == len(ev["lengths"])
    assert all(0.0 <= a <= 1.0 for a in ev["token_acc"] + ev["seq_acc"])
    assert ev["train_max_len"] == 6
    for key in ("acc_id", "acc_ood"):
        assert 0.0 <= ev[key] <= 1.0
    assert ev["acc_id"] == pytest.approx(sum(ev["token_acc"][:5]) / 5)  # lengths 2..6
    assert ev["acc_ood"] == pytest.approx(sum(ev["token_acc"][5:]) / 6)  # lengths 7..12
    assert tr["steps"] == 20 and tr["final_loss"] > 0 and tr["wall_s"] > 0 and tr["steps_per_s"] > 0
    assert results["config"]["eval"]["max_len"] == 12
    assert results["provenance"]["jax"] == jax.__version__  # the rest: test_provenance.py


def test_evaluation_compiles_one_program_per_bucket(finished_run):
    _, results = finished_run
    assert results["eval"]["buckets"] == length_buckets(6, 12) == [6, 12]
    assert results["eval"]["num_compilations"] == 2  # not one per length (11 lengths)


def test_run_directory_holds_config_jsonl_and_plot(finished_run):
    run_dir, _ = finished_run
    assert (run_dir / "config.yaml").read_text().startswith("seed: 0")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [10, 20, 20]
    assert "train/loss" in lines[0] and "eval/acc_ood" in lines[-1]
    assert not any("len_" in key for line in lines for key in line)  # lengths: results.json
    assert (run_dir / "accuracy_vs_length.png").stat().st_size > 1000


def test_tensorboard_events_have_stable_tags_and_the_plot(finished_run):
    run_dir, results = finished_run
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {
        "train/loss",
        "train/acc",
        "train/lr",
        "eval/acc_id",
        "eval/acc_ood",
        "eval/token_acc_by_length",
        "eval/seq_acc_by_length",
    }
    assert expected <= scalars
    assert not any("len_" in tag for tag in scalars)  # no card per length
    assert [e.step for e in events.Scalars("train/loss")] == [10, 20]
    assert events.Scalars("eval/acc_ood")[0].value == pytest.approx(results["eval"]["acc_ood"])
    # Accuracy over input length: the step is the length, so runs overlay in one chart.
    for metric in ("token_acc", "seq_acc"):
        curve = events.Scalars(f"eval/{metric}_by_length")
        assert [e.step for e in curve] == results["eval"]["lengths"]
        assert [e.value for e in curve] == pytest.approx(results["eval"][metric])
    assert "eval/accuracy_vs_length" in events.Tags()["images"]


def test_attention_maps_are_in_tensorboard_as_images(finished_run):
    """One image per layer, for the longest evaluated length, read back and decoded."""
    run_dir, results = finished_run
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert results["eval"]["attention_len"] == 12
    for layer in (0, 1):
        (image,) = events.Images(f"eval/attention/layer_{layer}")
        assert image.step == 20
        decoded = matplotlib.image.imread(io.BytesIO(image.encoded_image_string), format="png")
        assert decoded.shape[0] == image.height > 100 and decoded.shape[1] == image.width > 100
        assert decoded[..., :3].std() > 0.01  # a picture, not a blank canvas
    assert "eval/attention/layer_2" not in events.Tags()["images"]  # the model has 2 layers
    assert not list(run_dir.glob("attention*.png"))  # PNG files only with eval.save_attention


def test_attention_maps_are_the_evaluated_examples_weights(finished_run):
    """Rows of attention weights over the real slots sum to 1, and padding gets none."""
    run_dir, results = finished_run
    settings = make_settings("encoding=rope", "task=word_order")
    graphdef, params = restore_params(run_dir, settings)
    maps = attention_maps(settings, graphdef, params, 9)  # bucket 12: 9 + 1 real slots, 2 padding
    assert len(maps) == 2 and maps[0].shape == (4, 10, 10)
    np.testing.assert_allclose(maps[0].sum(-1), 1.0, rtol=1e-5)


def test_finished_run_is_never_overwritten(finished_run):
    run_dir, _ = finished_run
    before = (run_dir / "results.json").read_text()
    with pytest.raises(ConfigError, match="already holds a finished run"):
        run(make_settings(), run_dir, show_progress=False)
    assert (run_dir / "results.json").read_text() == before


def test_not_representable_lengths_are_reported_not_clamped(tmp_path):
    # A 16-row table holds inputs up to length 15 (15 tokens + 1 answer slot = 16 positions).
    settings = make_settings("encoding=learned", "encoding.table_size=16", "eval.max_len=20")
    ev = run(settings, tmp_path, show_progress=False)["eval"]
    assert ev["not_representable"] == [16, 17, 18, 19, 20]
    assert ev["token_acc"][ev["lengths"].index(15)] is not None
    assert ev["token_acc"][-5:] == [None] * 5 and ev["seq_acc"][-5:] == [None] * 5
    assert ev["acc_ood"] is None
    assert ev["acc_ood_representable"] is not None


def test_divergence_stops_training_with_a_clear_status(tmp_path, capsys):
    settings = make_settings("optim.learning_rate=1e30", "optim.warmup_steps=0")
    results = run(settings, tmp_path, show_progress=False)
    on_disk = json.loads((tmp_path / "results.json").read_text())  # strict JSON: no NaN
    assert on_disk == results
    assert results["status"] == "diverged" and results["eval"] is None
    assert results["train"]["steps"] == 10 and results["train"]["final_loss"] is None
    assert "not finite" in capsys.readouterr().out
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["train/loss"] is None


def _cli(tmp_path, *overrides):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "posenc_jax", f"hydra.run.dir={tmp_path}", *overrides],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_cli_trains_decoder_and_prints_table(tmp_path):
    done = _cli(
        tmp_path, *FAST, "encoding=sinusoidal", "task=reverse", "model.causal=true", "seed=3"
    )
    assert done.returncode == 0, done.stderr
    assert "acc_ood" in done.stdout and "len" in done.stdout
    assert done.stdout.rstrip().endswith(f"run folder: {tmp_path}")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["model"]["causal"] is True and results["config"]["seed"] == 3
    assert results["eval"]["scoring"] == "greedy"
    assert not (tmp_path / ".hydra").exists()  # config.yaml and provenance.command say it all
    assert not list(tmp_path.glob("*.log"))  # the console has the log; no empty cli.log
    # Refused into that finished folder (here for another seed): every file stays as it was.
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}
    again = _cli(tmp_path, *FAST, "encoding=sinusoidal", "task=reverse", "seed=4")
    assert again.returncode == 2 and "already holds a finished run" in again.stderr
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_a_refused_config_leaves_no_folder_behind(tmp_path):
    done = _cli(tmp_path / "run", "train.batch_size=0")
    assert done.returncode == 2 and "train.batch_size=0 must be positive" in done.stderr
    assert not (tmp_path / "run").exists()


def test_cli_unknown_choice_fails_with_hydras_list_of_choices(tmp_path, capsys):
    """The other bad inputs are in test_bad_input.py."""
    status, _, err = run_in_process(main, [f"hydra.run.dir={tmp_path}", "encoding=fourier"], capsys)
    assert status == 1 and "Could not find 'encoding/fourier'" in err
    assert all(name in err for name in ("nope", "rope", "sinusoidal", "learned"))


def test_cli_help_says_what_the_command_does(capsys):
    status, out, _ = run_in_process(main, ["--help"], capsys)
    assert status == 0
    assert out.startswith("posenc-train: train a tiny Transformer") and "powered by" not in out


def test_hparams_session_holds_the_settings_and_summary_metrics(finished_run):
    run_dir, results = finished_run
    events = EventAccumulator(str(run_dir / "hparams"), size_guidance={"scalars": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")
    session = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = session.session_start_info.hparams
    assert values["encoding.name"].string_value == "rope"
    assert values["task.name"].string_value == "word_order"
    assert values["model.d_model"].number_value == 32
    assert values["eval.max_len"].number_value == 12
    for key in ("acc_id", "acc_ood", "seq_acc_id", "seq_acc_ood"):
        (point,) = events.Scalars(f"hparams/{key}")
        assert point.value == pytest.approx(results["eval"][key])
