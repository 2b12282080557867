"""posenc-eval: a trained run evaluated again, from its checkpoint and its own config."""

import json
import shutil

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from posenc_jax.cli import evaluate_main
from posenc_jax.errors import ConfigError
from posenc_jax.reevaluate import default_tag, reevaluate
from posenc_jax.run import run

from helpers import make_settings, run_in_process

# The one entry of the `eval` section that measures this machine, not the model.
TIMING = {"wall_s"}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trained")
    results = run(make_settings("encoding=rope", "task=reverse"), run_dir, show_progress=False)
    return run_dir, results


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("decoder")
    settings = make_settings("encoding=rope", "task=reverse", "model.causal=true")
    return run_dir, run(settings, run_dir, show_progress=False)


def _without_timing(evaluation):
    return {key: value for key, value in evaluation.items() if key not in TIMING}


def test_same_settings_reproduce_results_exactly(trained_run):
    run_dir, original = trained_run
    again = reevaluate(run_dir)
    on_disk = json.loads((run_dir / "results_rerun.json").read_text())
    assert on_disk == again
    assert _without_timing(again["eval"]) == _without_timing(original["eval"])
    assert again["config"] == original["config"] and again["train"] == original["train"]
    assert set(again) == set(original)  # the schema of results.json
    # Its own provenance, and that of the training run it evaluated.
    assert again["provenance"]["trained"] == original["provenance"]


def test_longer_evaluation_extends_the_same_numbers(trained_run, capsys):
    run_dir, original = trained_run
    longer = reevaluate(run_dir, ["eval.max_len=30"])
    assert (run_dir / "results_max_len-30.json").exists()
    ev, before = longer["eval"], original["eval"]
    assert ev["lengths"] == list(range(1, 31)) and ev["buckets"] == [6, 12, 24, 30]
    # The same examples at every length evaluated before, whatever bucket they now fall in.
    assert ev["token_acc"][: len(before["lengths"])] == before["token_acc"]
    assert ev["attention_len"] == 30
    assert f"wrote {run_dir / 'results_max_len-30.json'}" in capsys.readouterr().out


def test_scaling_rule_is_applied_and_tagged(trained_run):
    run_dir, original = trained_run
    results = reevaluate(
        run_dir,
        ["encoding.scaling=yarn", "encoding.scale=2", "eval.save_attention=true"],
        tag="yarn2",
    )
    encoding = results["config"]["encoding"]
    assert (encoding["scaling"], encoding["scale"], encoding["original_max_len"]) == (
        "yarn",
        2.0,
        12,
    )
    assert (
        results["eval"]["token_acc"] != original["eval"]["token_acc"]
    )  # the rule changed the model
    assert (run_dir / "accuracy_vs_length_yarn2.png").exists()
    assert (run_dir / "attention_yarn2_layer0.png").stat().st_size > 1000
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_yarn2/acc_ood" in line and line["step"] == 20 for line in lines)
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert {
        "eval_yarn2/attention/layer_0",
        "eval_yarn2/accuracy_vs_length",
        "eval/attention/layer_0",
    } <= set(events.Tags()["images"])
    assert events.Scalars("eval_yarn2/acc_ood")[0].value == pytest.approx(
        results["eval"]["acc_ood"]
    )
    curve = events.Scalars("eval_yarn2/token_acc_by_length")
    assert [e.step for e in curve] == results["eval"]["lengths"]
    hparams = EventAccumulator(str(run_dir / "hparams_yarn2"), size_guidance={"scalars": 0})
    hparams.Reload()
    assert hparams.Scalars("hparams/acc_ood")[0].value == pytest.approx(results["eval"]["acc_ood"])


@pytest.mark.parametrize(
    "override, refused",
    [
        ("model.d_model=64", "model.d_model"),
        ("task.vocab_size=32", "task.vocab_size"),
        ("encoding.base=500", "encoding.base"),
        ("seed=5", "seed"),
        ("encoding.name=alibi", "encoding.name"),
    ],
)
def test_changes_that_need_retraining_are_refused(trained_run, override, refused):
    run_dir, _ = trained_run
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(
        ConfigError,
        match=rf"A re-evaluation cannot change \['{refused}'\].*needs retraining.*"
        rf"may change \['eval.\*', 'train.sharding', 'encoding.scaling', 'encoding.scale', "
        rf"'encoding.original_max_len'\]",
    ):
        reevaluate(run_dir, [override])
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_an_existing_tag_is_not_overwritten(trained_run):
    run_dir, _ = trained_run
    reevaluate(run_dir, ["eval.examples_per_length=8"], tag="small")
    before = (run_dir / "results_small.json").read_text()
    with pytest.raises(ConfigError, match="results_small.json already exists"):
        reevaluate(run_dir, ["eval.examples_per_length=4"], tag="small")
    assert (run_dir / "results_small.json").read_text() == before


def test_corrupt_checkpoint_is_a_clear_error(trained_run, tmp_path):
    source, _ = trained_run
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    for path in (copy / "checkpoint").rglob("*"):
        if path.is_file():
            path.write_bytes(b"not a checkpoint")
    with pytest.raises(
        ConfigError, match=r"checkpoint .* is corrupt or does not match.*Nothing was evaluated"
    ):
        reevaluate(copy, ["eval.max_len=20"])
    assert not (copy / "results_max_len-20.json").exists()


def test_a_folder_without_a_finished_run_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"holds no finished run \(results.json is missing\)"):
        reevaluate(tmp_path)


def test_cli_reports_bad_input_in_one_paragraph(trained_run, capsys):
    run_dir, _ = trained_run
    argv = [f"run_dir={run_dir}", "model.num_layers=3"]
    status, _, err = run_in_process(evaluate_main, argv, capsys, hydra=False)
    assert status == 2
    assert err.startswith("posenc-eval: A re-evaluation cannot change ['model.num_layers']")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "overrides, tag",
    [
        ([], "rerun"),
        (["eval.max_len=256"], "max_len-256"),
        (["encoding.scaling=yarn", "encoding.scale=4"], "scaling-yarn_scale-4"),
        (["eval.attention_len=null"], "attention_len-null"),
        (["encoding.scaling=dynamic_ntk"], "scaling-dynamic_ntk"),
    ],
)
def test_default_tags_are_safe_in_a_shell(overrides, tag):
    assert default_tag(overrides) == tag


@pytest.mark.parametrize("tag", ["a=b", "a,b", "a b", "../up", "$HOME"])
def test_tags_that_a_shell_or_a_file_name_would_mangle_are_refused(trained_run, tag):
    run_dir, _ = trained_run
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(ConfigError, match=r"cannot name a file safely"):
        reevaluate(run_dir, ["eval.max_len=20"], tag=tag)
    assert sorted(p.name for p in run_dir.iterdir()) == before


@pytest.mark.parametrize("override", ["foo.bar=1", "encoding.table_size=64", "seed.x=1", "x=1"])
def test_unknown_keys_are_named_as_unknown_not_as_retraining(trained_run, override):
    run_dir, _ = trained_run
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"Unknown key\(s\) \['{key}'\].*may change \['eval"):
        reevaluate(run_dir, [override])


@pytest.mark.parametrize("override", ["eval.decoding=", "eval.max_len= ", "=3", "eval.max_len"])
def test_an_override_without_a_value_is_refused_not_read_as_null(trained_run, override):
    run_dir, _ = trained_run
    before = set(run_dir.glob("results_*.json"))
    with pytest.raises(ConfigError, match=r"is not of the form key=value"):
        reevaluate(run_dir, [override])
    assert set(run_dir.glob("results_*.json")) == before  # nothing written


def test_a_tag_too_long_for_a_file_name_is_refused(trained_run):
    run_dir, _ = trained_run
    with pytest.raises(ConfigError, match=r"use at most 100 letters"):
        reevaluate(run_dir, [], tag="a" * 300)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: (d / "results.json").write_text('{"status": "compl'),
            r"results.json is unreadable",
        ),
        (lambda d: (d / "results.json").write_text("[1, 2]"), r"did not complete \(status None"),
        (lambda d: (d / "config.yaml").unlink(), r"has results.json but no config.yaml"),
        (lambda d: (d / "config.yaml").write_text("a: [1,"), r"config.yaml is unreadable"),
        (
            lambda d: (d / "config.yaml").write_text("7"),
            r"config.yaml is not a posenc-train config",
        ),
    ],
)
def test_a_damaged_run_folder_is_a_clear_error_that_changes_nothing(
    trained_run, tmp_path, damage, message
):
    copy = tmp_path / "copy"
    shutil.copytree(trained_run[0], copy)
    damage(copy)
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*")}
    with pytest.raises(ConfigError, match=message):
        reevaluate(copy, ["eval.max_len=20"])
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*")} == before


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "run_dir=<dir> is required"),
        (["run_dir="], "run_dir= is empty"),
        (["run_dir=a", "run_dir=b"], "run_dir= is given twice"),
        (["run_dir=a", "tag=x", "tag=y"], "tag= is given twice"),
    ],
)
def test_cli_usage_errors_go_to_stderr_with_the_usage(capsys, argv, message):
    status, out, err = run_in_process(evaluate_main, argv, capsys, hydra=False)
    assert status == 2 and out == ""
    assert err.startswith(f"posenc-eval: {message}") and "usage: posenc-eval" in err


def test_a_greedy_decoder_is_scored_teacher_forced_on_request(decoder_run):
    run_dir, original = decoder_run
    assert original["eval"]["scoring"] == "greedy"
    forced = reevaluate(run_dir, ["eval.decoding=teacher_forced"])
    assert forced["eval"]["scoring"] == "teacher_forced"
    assert forced["config"]["eval"]["decoding"] == "teacher_forced"
    assert (run_dir / "results_decoding-teacher_forced.json").exists()


def test_a_decoder_trained_before_eval_decoding_existed_keeps_its_teacher_forced_scores(
    decoder_run, tmp_path
):
    """Such a run's config.yaml has no eval.decoding, and it was scored teacher-forced: a
    re-evaluation without overrides reproduces that, and greedy can be asked for."""
    source, _ = decoder_run
    old = tmp_path / "old"
    shutil.copytree(source, old)
    for leftover in old.glob("results_*.json"):
        leftover.unlink()
    config_file = old / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    del config["eval"]["decoding"]
    config_file.write_text(yaml.safe_dump(config))

    rerun = reevaluate(old, tag="rerun")
    forced = reevaluate(source, ["eval.decoding=teacher_forced"], tag="forced_again")
    assert rerun["eval"]["scoring"] == "teacher_forced"
    assert _without_timing(rerun["eval"]) == _without_timing(forced["eval"])
    assert reevaluate(old, ["eval.decoding=greedy"])["eval"]["scoring"] == "greedy"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["encoding=alibi"], r"encoding='alibi' names the whole section 'encoding'"),
        (["train=5"], r"train=5 names the whole section 'train'"),
        (["eval.max_len=20", "eval.max_len=30"], r"eval.max_len is given twice"),
        (["+eval.max_len=20"], r"starts with Hydra's '\+'.*Write eval.max_len=20"),
        (["eval.max_len=4"], r"eval.max_len=4 is below the training length"),
    ],
)
def test_overrides_that_would_not_mean_what_they_say_are_refused(trained_run, overrides, message):
    run_dir, _ = trained_run
    before = set(run_dir.glob("results_*.json"))
    with pytest.raises(ConfigError, match=message):
        reevaluate(run_dir, overrides, tag="refused")
    assert set(run_dir.glob("results_*.json")) == before
