"""posenc-report: a sweep's runs become one table with mean ± std over seeds, one plot per
task, and a list of every run it could not use, with the reason."""

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from posenc_jax.cli import main, report_main
from posenc_jax.study_report import group_runs, read_runs, write_report

from helpers import FAST, compose_config, run_in_process


def _fake_run(folder, name, *, encoding="rope", seed=0, token_acc=(1.0, 0.8, 0.4), **changes):
    """A run folder as posenc-train leaves it, with made-up accuracies (lengths 1, 2, 3, trained
    to 2): only what posenc-report reads."""
    run_dir = folder / name
    run_dir.mkdir(parents=True)
    config = {"seed": seed, "encoding": {"name": encoding}, "task": {"name": "copy"}, "eval": {}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    evaluation = {
        "lengths": [1, 2, 3],
        "train_max_len": 2,
        "token_acc": list(token_acc),
        "seq_acc": [0.5, 0.5, 0.0],
        "scoring": "encoder",
        "acc_id": statistics.fmean(token_acc[:2]),
        "acc_ood": token_acc[2],
        "seq_acc_id": 0.5,
        "seq_acc_ood": 0.0,
    }
    results = {"status": "completed", "config": config, "eval": evaluation, **changes}
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def test_a_two_by_two_study_sweep_becomes_one_row_per_encoding_with_its_seeds(tmp_path, capsys):
    """+experiment=encodings_reverse narrowed to 2 encodings x 2 seeds: four runs in folders
    named <encoding>-<task>/<other overrides>, then one report row per encoding."""
    sweep = tmp_path / "sweep"
    overrides = [
        "+experiment=encodings_reverse",
        "encoding=nope,alibi",
        "seed=0,1",
        "train.num_seeds=1",  # the study's 3 seeds in one run, here 2 separate runs of one
        *FAST,
    ]
    status, _, err = run_in_process(main, ["-m", *overrides, f"hydra.sweep.dir={sweep}"], capsys)
    assert status == 0, err
    folders = sorted(p.parent.relative_to(sweep) for p in sweep.rglob("results.json"))
    assert [folder.parent.name for folder in folders] == ["alibi-reverse"] * 2 + [
        "nope-reverse"
    ] * 2
    assert [folder.name.split(",task.")[0][-6:] for folder in folders] == ["seed=0", "seed=1"] * 2
    config = compose_config(["+experiment=encodings_reverse"], hydra=True)
    classic = "glob(*,exclude=[fox,stick_breaking,path,abacus,coupled,hybrid])"
    assert dict(config.hydra.sweeper.params) == {"encoding": classic}
    assert config.train.num_seeds == 3
    assert config.hydra.sweep.dir == "multirun/encodings_reverse"
    runs, skipped = read_runs(sweep)
    assert len(runs) == 4 and not skipped

    status, out, err = run_in_process(report_main, [str(sweep)], capsys, hydra=False)
    assert status == 0, err
    assert "Read 4 completed runs in 2 rows; skipped 0." in out
    with (sweep / "report.csv").open() as file:
        rows = {row["encoding"]: row for row in csv.DictReader(file)}
    assert set(rows) == {"alibi", "nope"}
    for encoding, row in rows.items():
        mine = [r for r in runs if r["encoding"] == encoding]
        assert row["seeds"] == "2"
        for key in ("acc_id", "acc_ood", "seq_acc_id", "seq_acc_ood"):
            values = [r["eval"][key] for r in mine]
            assert float(row[f"{key}_mean"]) == pytest.approx(statistics.fmean(values), abs=1e-6)
            assert float(row[f"{key}_std"]) == pytest.approx(statistics.stdev(values), abs=1e-6)
    assert (sweep / "accuracy_vs_length_reverse.png").stat().st_size > 1000
    # Each job records the command that reproduces it alone, not the whole sweep's.
    commands = {r["provenance"]["command"] for r in runs}
    assert len(commands) == 4 and all(
        "seed=0,1" not in c and "nope,alibi" not in c for c in commands
    )
    assert all(c.startswith("posenc-train -m ") and "+experiment=" in c for c in commands)
    assert "| reverse | alibi |" in (sweep / "report.md").read_text()


def test_unfinished_diverged_and_unreadable_runs_are_listed_and_the_rest_reported(tmp_path):
    _fake_run(tmp_path, "good")
    (_fake_run(tmp_path, "unfinished") / "results.json").unlink()
    _fake_run(tmp_path, "diverged", status="diverged")
    (_fake_run(tmp_path, "corrupt") / "results.json").write_text("{not json")
    text, _ = write_report(tmp_path)
    assert "Read 1 completed runs in 1 rows; skipped 3." in text
    assert f"- skipped {tmp_path / 'unfinished'}: unfinished: no results.json" in text
    assert f"- skipped {tmp_path / 'diverged'}: status 'diverged'" in text
    assert f"- skipped {tmp_path / 'corrupt'}: unreadable results.json (JSONDecodeError)" in text
    assert "| copy | rope | 0.900 | 0.400 |" in text


def test_seeds_pool_and_other_swept_settings_split_rows():
    def results(seed, acc, causal, scoring="encoder"):
        config = {"seed": seed, "encoding": {"name": "rope"}, "task": {"name": "copy"}}
        config["model"] = {"causal": causal}
        return {"config": config, "eval": {"scoring": scoring, "acc_id": acc, "lengths": [1]}}

    rows = group_runs([results(0, 0.8, False), results(1, 0.6, False), results(0, 0.5, True)])
    assert [(row.settings, len(row.runs)) for row in rows] == [
        ((("model.causal", False),), 2),
        ((("model.causal", True),), 1),
    ]
    assert rows[0].summary("acc_id") == pytest.approx((0.7, statistics.stdev([0.8, 0.6])))
    # The same settings scored two ways are two rows, never averaged together.
    mixed = group_runs([results(0, 0.8, True, "greedy"), results(1, 0.6, True, "teacher_forced")])
    assert len(mixed) == 2


@pytest.mark.parametrize(
    "token_acc, longest",
    [((1.0, 0.95, 0.91), 3), ((1.0, 0.8, 0.95), 1), ((0.5, 0.95, 0.95), None)],
)
def test_longest_length_at_the_threshold_is_where_the_mean_first_falls_below(
    tmp_path, token_acc, longest
):
    _fake_run(tmp_path, "a", token_acc=token_acc)
    _fake_run(tmp_path, "b", seed=1, token_acc=token_acc)
    (row,) = group_runs(read_runs(tmp_path)[0])
    assert row.longest_at(0.9) == longest


def test_a_folder_that_is_not_there_is_a_usage_error(tmp_path, capsys):
    status, _, err = run_in_process(report_main, [str(tmp_path / "nowhere")], capsys, hydra=False)
    assert status == 2 and "is not a folder" in err


def test_duplicate_and_incomplete_runs_are_skipped_not_counted(tmp_path):
    _fake_run(tmp_path / "a", "run")
    _fake_run(tmp_path / "b", "run")  # the same settings and seed, in another sweep folder
    broken = _fake_run(tmp_path, "broken")
    results = json.loads((broken / "results.json").read_text())
    del results["eval"]["acc_ood"]
    (broken / "results.json").write_text(json.dumps(results))
    runs, skipped = read_runs(tmp_path)
    assert len(runs) == 1
    reasons = {Path(path).relative_to(tmp_path).as_posix(): reason for path, reason in skipped}
    assert reasons["b/run"] == f"duplicate of {tmp_path / 'a' / 'run'} (same settings and seed)"
    assert reasons["broken"] == "incomplete results.json: eval lacks ['acc_ood']"


def test_a_multi_seed_run_counts_as_its_seeds(tmp_path):
    """A train.num_seeds=3 run is three runs to the report: its replicas pool with separate
    runs of other seeds, a diverged replica is skipped alone, and a separate run of a seed the
    multi-seed run already holds is a duplicate."""
    vmapped = _fake_run(tmp_path, "vmapped")
    results = json.loads((vmapped / "results.json").read_text())
    results["config"]["train"] = {"num_seeds": 3}
    replica = results["eval"]
    results["eval"] = {**replica, "acc_id": 0.1}  # the mean: never read as a seed's value
    results["seeds"] = [
        {"seed": 0, "status": "completed", "train": {}, "eval": {**replica, "acc_id": 0.8}},
        {"seed": 1, "status": "completed", "train": {}, "eval": {**replica, "acc_id": 0.5}},
        {"seed": 2, "status": "diverged", "train": {}, "eval": None},
    ]
    results["status"] = "diverged"
    (vmapped / "results.json").write_text(json.dumps(results))
    _fake_run(tmp_path, "seed1", seed=1)
    _fake_run(tmp_path, "seed3", seed=3, token_acc=(0.6, 0.8, 0.4))

    runs, skipped = read_runs(tmp_path)  # folders in name order: seed1, seed3, vmapped
    assert sorted(run["config"]["seed"] for run in runs) == [0, 1, 3]
    assert dict(skipped) == {
        f"{vmapped} (seed 1)": f"duplicate of {tmp_path / 'seed1'} (same settings and seed)",
        f"{vmapped} (seed 2)": "status 'diverged'",
    }
    (row,) = group_runs(runs)
    mean, std = row.summary("acc_id")
    assert mean == pytest.approx(statistics.fmean([0.8, 0.9, 0.7]))
    assert std == pytest.approx(statistics.stdev([0.8, 0.9, 0.7]))


@pytest.mark.parametrize(
    "seeds, reason",
    [
        (None, "train.num_seeds=2 but no list of per-seed results"),
        ([], "seeds [] are not the seeds [0, 1] of train.num_seeds"),
        ([0, "1"], "seeds [0, '1'] are not the seeds [0, 1] of train.num_seeds"),
        ([0, 0], "seeds [0, 0] are not the seeds [0, 1] of train.num_seeds"),
    ],
)
def test_a_multi_seed_run_whose_seeds_do_not_add_up_is_skipped_with_the_reason(
    tmp_path, seeds, reason
):
    """Never read its mean over seeds as one run, and never count a seed twice."""
    run_dir = _fake_run(tmp_path, "vmapped")
    results = json.loads((run_dir / "results.json").read_text())
    results["config"]["train"] = {"num_seeds": 2}
    if seeds is not None:
        replica = {"status": "completed", "train": {}, "eval": results["eval"]}
        results["seeds"] = [{**replica, "seed": seed} for seed in seeds]
    (run_dir / "results.json").write_text(json.dumps(results))
    assert read_runs(tmp_path) == ([], [(str(run_dir), f"incomplete results.json: {reason}")])


def test_a_setting_that_differs_between_encodings_of_one_task_is_shown(tmp_path):
    _fake_run(tmp_path, "rope", encoding="rope")
    learned = _fake_run(tmp_path, "learned", encoding="learned")
    results = json.loads((learned / "results.json").read_text())
    results["config"]["model"] = {"causal": True}
    results["config"]["encoding"]["table_size"] = 512  # its own parameter: not a column
    (learned / "results.json").write_text(json.dumps(results))
    text, _ = write_report(tmp_path)
    assert "| task | encoding | model.causal | acc_id |" in text
    assert "table_size" not in text


def test_a_folder_without_any_run_is_refused_and_nothing_is_written(tmp_path, capsys):
    status, _, err = run_in_process(report_main, [str(tmp_path)], capsys, hydra=False)
    assert status == 2 and f"Found no run below {tmp_path} (no config.yaml" in err
    assert list(tmp_path.iterdir()) == []


def test_only_skipped_runs_still_give_an_honest_report(tmp_path, capsys):
    (_fake_run(tmp_path, "unfinished") / "results.json").unlink()
    status, out, _ = run_in_process(report_main, [str(tmp_path)], capsys, hydra=False)
    assert status == 0 and "Read 0 completed runs in 0 rows; skipped 1." in out
    assert (tmp_path / "report.csv").read_text().startswith("task,encoding,acc_id_mean")


def test_runs_from_before_a_setting_existed_pool_with_runs_that_have_it(tmp_path):
    """A run recorded before train.length_buckets, sharding and dtype existed ran with their
    first values; it pools with a new run of another seed, and is a duplicate of one of its
    own seed, instead of making rows of its own."""
    _fake_run(tmp_path, "old")
    new = {"num_seeds": 1, "length_buckets": 1, "sharding": None, "dtype": "float32"}
    for name, seed in (("new", 1), ("again", 0)):
        run_dir = _fake_run(tmp_path, name, seed=seed)
        results = json.loads((run_dir / "results.json").read_text())
        results["config"]["train"] = new
        (run_dir / "results.json").write_text(json.dumps(results))
    runs, skipped = read_runs(tmp_path)
    (row,) = group_runs(runs)
    assert len(row.runs) == 2 and row.settings == ()
    assert skipped == [
        (str(tmp_path / "old"), f"duplicate of {tmp_path / 'again'} (same settings and seed)")
    ]


def test_rope_runs_from_before_partial_rotation_pool_with_runs_that_have_it(tmp_path):
    """encoding.fraction and encoding.partial came later: a RoPE run without them ran with
    their defaults (1.0, neox), so it pools with a new run of another seed."""
    _fake_run(tmp_path, "old")
    run_dir = _fake_run(tmp_path, "new", seed=1)
    results = json.loads((run_dir / "results.json").read_text())
    results["config"]["encoding"].update(fraction=1.0, partial="neox")
    (run_dir / "results.json").write_text(json.dumps(results))
    runs, _ = read_runs(tmp_path)
    (row,) = group_runs(runs)
    assert len(row.runs) == 2 and row.settings == ()


@pytest.mark.parametrize(
    "first, second",
    [
        ({"train": {"sharding": "seeds"}}, {"train": {"sharding": None}}),
        ({"train": {"steps_per_dispatch": 1}}, {"train": {"steps_per_dispatch": 10}}),
        ({"eval": {"decoding": None}}, {"eval": {"decoding": "greedy"}}),
    ],
)
def test_how_a_run_was_executed_does_not_make_it_another_setting(tmp_path, first, second):
    """Placement, chunking and an unset decoding that resolved to the same scoring change no
    number: a second run of the same seed is a duplicate, not a row of its own."""
    for name, change in (("a", first), ("b", second)):
        run_dir = _fake_run(tmp_path, name)
        results = json.loads((run_dir / "results.json").read_text())
        for section, values in change.items():
            results["config"].setdefault(section, {}).update(values)
        (run_dir / "results.json").write_text(json.dumps(results))
    runs, skipped = read_runs(tmp_path)
    assert len(runs) == 1 and len(group_runs(runs)) == 1
    assert skipped == [
        (str(tmp_path / "b"), f"duplicate of {tmp_path / 'a'} (same settings and seed)")
    ]


def test_an_unwritable_output_and_an_odd_task_name_are_handled(tmp_path, capsys):
    run_dir = _fake_run(tmp_path, "odd")
    results = json.loads((run_dir / "results.json").read_text())
    results["config"]["task"]["name"] = "a/b"
    (run_dir / "results.json").write_text(json.dumps(results))
    _, written = write_report(tmp_path)
    assert written[-1].name == "accuracy_vs_length_a-b.png" and written[-1].exists()
    argv = [str(tmp_path), "--out", str(run_dir / "results.json")]  # a file, not a folder
    status, _, err = run_in_process(report_main, argv, capsys, hydra=False)
    assert status == 2 and err.startswith("posenc-report: cannot write the report:")


def test_a_study_run_without_multirun_is_refused(tmp_path, capsys):
    argv = ["+experiment=encodings_reverse", *FAST, f"hydra.run.dir={tmp_path}"]
    status, _, err = run_in_process(main, argv, capsys)
    assert status == 2 and "defines a sweep (encoding=glob(*,exclude=[fox," in err
    assert not (tmp_path / "results.json").exists()


CONFIG_NOT_A_MAPPING = "its config, or the config's train section, is not a mapping"


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda r: r["eval"].update(lengths=None), "per-length values do not match eval.lengths"),
        (lambda r: r["eval"].update(token_acc=5), "per-length values do not match eval.lengths"),
        (lambda r: r["config"]["task"].pop("name"), "no task or encoding name in config"),
        (lambda r: r["eval"].update(acc_id="0.5"), "a metric that is not a number"),
        (lambda r: r["eval"].update(acc_id=float("nan")), "an accuracy outside [0, 1]"),
        (lambda r: r["eval"]["token_acc"].__setitem__(1, 5.0), "an accuracy outside [0, 1]"),
        (lambda r: r["eval"].update(acc_ood=float("inf")), "an accuracy outside [0, 1]"),
        (
            lambda r: r["eval"].update(train_max_len=None),
            "eval.train_max_len is not a whole number",
        ),
        (lambda r: r.update(config="x"), CONFIG_NOT_A_MAPPING),
        (lambda r: r["config"].update(train=[1]), CONFIG_NOT_A_MAPPING),
        (lambda r: r.pop("status"), "no 'status'"),
        (lambda r: r["config"].update(seed=0.0), "config.seed is not a whole number"),
        (lambda r: r["config"].update(seed=[0]), "config.seed is not a whole number"),
        (lambda r: r["eval"].update(lengths=[{}, {}, {}]), "eval.lengths are not whole numbers"),
        (
            lambda r: r["config"].update(train={"num_seeds": True}),
            "train.num_seeds=True is not a whole number",
        ),
    ],
)
def test_malformed_results_are_skipped_with_the_reason(tmp_path, change, reason):
    run_dir = _fake_run(tmp_path, "bad")
    results = json.loads((run_dir / "results.json").read_text())
    change(results)
    (run_dir / "results.json").write_text(json.dumps(results))
    assert read_runs(tmp_path) == ([], [(str(run_dir), f"incomplete results.json: {reason}")])


def test_seeds_evaluated_at_different_lengths_are_not_averaged_together(tmp_path):
    _fake_run(tmp_path, "a")
    short = _fake_run(tmp_path, "b", seed=1)
    results = json.loads((short / "results.json").read_text())
    for key in ("lengths", "token_acc", "seq_acc"):
        results["eval"][key] = results["eval"][key][:2]
    (short / "results.json").write_text(json.dumps(results))
    rows = group_runs(read_runs(tmp_path)[0])
    assert sorted(len(row.runs) for row in rows) == [1, 1]


def test_decoder_results_from_before_scoring_was_recorded_count_as_teacher_forced():
    def results(seed, scoring=None):
        config = {"seed": seed, "encoding": {"name": "rope"}, "task": {"name": "copy"}}
        config["model"] = {"causal": True}
        evaluation = {"lengths": [1], **({"scoring": scoring} if scoring else {})}
        return {"config": config, "eval": evaluation}

    (pooled,) = group_runs([results(0), results(1, "teacher_forced")])
    assert len(pooled.runs) == 2
    split = group_runs([results(0), results(1, "greedy")])
    assert [row.settings for row in split] == [
        (("eval.scoring", "greedy"),),
        (("eval.scoring", "teacher_forced"),),
    ]
