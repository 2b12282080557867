"""Seeds as a batch axis: train.num_seeds=N trains N replicas in one vmapped program, and
replica i is the run with seed + i."""

import json
import shutil
import statistics

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from posenc_jax.checkpoint import restore_params
from posenc_jax.cli import seed_label
from posenc_jax.compilation import CompilationCounter
from posenc_jax.errors import ConfigError
from posenc_jax.evaluate import evaluate, evaluate_seeds
from posenc_jax.reevaluate import reevaluate
from posenc_jax.run import run
from posenc_jax.seeds import aggregate, mean_std
from posenc_jax.train import init_state, make_train_chunk, train

from helpers import make_settings

TIMING = {"wall_s"}


@pytest.mark.parametrize(
    "overrides",
    [
        ("task=word_order", "encoding=rope"),
        # A greedy decoder with randomized positions: decoding and the positions' draws vmapped.
        ("task=reverse", "model.causal=true", "encoding=alibi", "encoding.randomized=true"),
        # Length buckets: each replica's step holds a group of examples from every bucket.
        ("task=reverse", "encoding=t5", "train.length_buckets=3"),
    ],
)
def test_each_replica_equals_the_run_of_its_own_seed(overrides):
    together = make_settings(*overrides, "seed=5", "train.num_seeds=3")
    outcome = train(together, lambda *_: None)
    evaluations = evaluate_seeds(together, outcome.graphdef, outcome.params)
    assert [s["seed"] for s in outcome.seed_summaries] == [5, 6, 7]
    for index in range(3):
        alone_settings = make_settings(*overrides, f"seed={5 + index}")
        alone = train(alone_settings, lambda *_: None)
        stacked = jax.tree.leaves(outcome.params)
        for a, b in zip(stacked, jax.tree.leaves(alone.params), strict=True):
            np.testing.assert_allclose(a[index], b, rtol=1e-5, atol=1e-6)
        replica = outcome.seed_summaries[index]
        assert replica["final_loss"] == pytest.approx(alone.summary["final_loss"], rel=1e-5)
        expected = evaluate(alone_settings, alone.graphdef, alone.params)
        for key in ("token_acc", "seq_acc", "acc_id", "acc_ood", "not_representable"):
            assert evaluations[index][key] == expected[key], key
    # Different seeds learn different models: the replicas are not copies of one another.
    first = jax.tree.leaves(outcome.params)[0]
    assert not np.allclose(first[0], first[1])


def test_replicas_step_in_one_program_compiled_once():
    settings = make_settings("train.num_seeds=4")
    graphdef, state, optimizer = init_state(settings)
    assert {leaf.shape[0] for leaf in jax.tree.leaves(state.params)} == {4}
    chunk = make_train_chunk(settings, graphdef, optimizer, 5)
    with CompilationCounter() as compiled:
        for _ in range(3):
            state, counts = chunk(state)
    assert compiled.count == 1
    assert state.step.tolist() == [15] * 4 and counts.scored.shape == (4,)


@pytest.fixture(scope="module")
def multi_seed_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("seeds")
    settings = make_settings("task=reverse", "seed=2", "train.num_seeds=3")
    return run_dir, settings, run(settings, run_dir, show_progress=False)


def test_results_hold_each_seed_and_their_mean_and_std(multi_seed_run):
    run_dir, _, results = multi_seed_run
    assert json.loads((run_dir / "results.json").read_text()) == results
    assert results["status"] == "completed" and results["train"]["num_seeds"] == 3
    replicas = results["seeds"]
    assert [r["seed"] for r in replicas] == [2, 3, 4]
    assert all(r["status"] == "completed" and r["train"]["steps"] == 20 for r in replicas)
    mean = results["eval"]
    assert mean["seeds"] == [2, 3, 4]
    for key in ("acc_id", "acc_ood", "seq_acc_id", "seq_acc_ood"):
        values = [r["eval"][key] for r in replicas]
        assert mean[key] == pytest.approx(statistics.fmean(values))
        assert mean[f"{key}_std"] == pytest.approx(statistics.stdev(values))
    for i in range(len(mean["lengths"])):
        values = [r["eval"]["token_acc"][i] for r in replicas]
        assert mean["token_acc"][i] == pytest.approx(statistics.fmean(values))
        assert mean["token_acc_std"][i] == pytest.approx(statistics.stdev(values))


def test_each_seed_has_its_own_tensorboard_run(multi_seed_run):
    run_dir, _, results = multi_seed_run
    for replica in results["seeds"]:
        events = EventAccumulator(str(run_dir / f"seed_{replica['seed']}"))
        events.Reload()
        assert [e.step for e in events.Scalars("train/loss")] == [10, 20]
        curve = events.Scalars("eval/token_acc_by_length")
        assert [e.step for e in curve] == replica["eval"]["lengths"]
        assert [e.value for e in curve] == pytest.approx(replica["eval"]["token_acc"])
        assert (run_dir / f"seed_{replica['seed']}" / "hparams").is_dir()
    # The folder's own events hold the mean over seeds.
    events = EventAccumulator(str(run_dir))
    events.Reload()
    mean = [e.value for e in events.Scalars("eval/token_acc_by_length")]
    assert mean == pytest.approx(results["eval"]["token_acc"])
    assert (run_dir / "accuracy_vs_length.png").is_file()


def test_the_checkpoint_holds_every_seed_and_reevaluation_reproduces_them(multi_seed_run):
    run_dir, settings, results = multi_seed_run
    graphdef, params = restore_params(run_dir, settings)
    assert {leaf.shape[0] for leaf in jax.tree.leaves(params)} == {3}
    again = reevaluate(run_dir, tag="rerun", show_progress=False)
    for original, rerun in zip(results["seeds"], again["seeds"], strict=True):
        assert {k: v for k, v in rerun["eval"].items() if k not in TIMING} == {
            k: v for k, v in original["eval"].items() if k not in TIMING
        }
    assert again["eval"]["acc_ood"] == results["eval"]["acc_ood"]


def test_a_run_where_every_seed_diverges_says_so_per_seed(tmp_path):
    settings = make_settings(
        "optim.learning_rate=1e30", "optim.warmup_steps=0", "train.num_seeds=2"
    )
    results = run(settings, tmp_path, show_progress=False)
    assert results["status"] == "diverged" and results["eval"] is None
    assert [(r["seed"], r["status"], r["eval"]) for r in results["seeds"]] == [
        (0, "diverged", None),
        (1, "diverged", None),
    ]
    assert not (tmp_path / "checkpoint").exists()


def test_the_mean_skips_diverged_seeds_and_keeps_unrepresentable_lengths_unknown():
    def evaluation(token_acc, acc_ood):
        return {"token_acc": token_acc, "seq_acc": token_acc, "acc_id": 0.5, "acc_ood": acc_ood,
                "acc_ood_representable": 0.5, "seq_acc_id": 0.5, "seq_acc_ood": acc_ood,
                "seq_acc_ood_representable": 0.5, "lengths": [1, 2]}  # fmt: skip

    merged = aggregate(
        [evaluation([1.0, None], None), None, evaluation([0.5, None], None)], [0, 1, 2]
    )
    assert merged is not None
    assert merged["seeds"] == [0, 2]
    assert merged["token_acc"] == [0.75, None]
    assert merged["token_acc_std"] == [pytest.approx(statistics.stdev([1.0, 0.5])), None]
    assert merged["acc_ood"] is None and merged["acc_id"] == 0.5
    assert aggregate([None, None], [0, 1]) is None
    assert mean_std([0.25]) == (0.25, None)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.num_seeds=0"], "train.num_seeds=0 must be an integer >= 1"),
        (["train.num_seeds=2.5"], "num_seeds=2.5 in section .train. has the wrong type"),
        ([f"seed={2**63 - 2}", "train.num_seeds=3"], "the last replica's seed"),
    ],
)
def test_bad_seed_counts_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_settings(*overrides)


def test_too_many_seeds_for_the_open_file_limit_is_refused_before_writing(tmp_path, monkeypatch):
    import resource

    raised = []
    monkeypatch.setattr(resource, "setrlimit", lambda kind, limits: raised.append(limits))
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (1024, 4096))
    settings = make_settings("train.num_seeds=5000")
    with pytest.raises(ConfigError, match=r"train.num_seeds=5000 needs about 10256 open files"):
        run(settings, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists() and not raised
    # Within the hard limit, the soft one is raised as `ulimit -n` would.
    from posenc_jax.outputs import reserve_open_files

    reserve_open_files(make_settings("train.num_seeds=1000"))
    assert raised == [(2256, 4096)]


def _copy_with_results(run_dir, tmp_path, change):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    results = json.loads((copy / "results.json").read_text())
    change(results)
    (copy / "results.json").write_text(json.dumps(results))
    return copy


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.pop("seeds"),
        lambda r: r["seeds"].pop(),
        lambda r: r["seeds"].__setitem__(1, None),
        lambda r: [s.update(status="diverged") for s in r["seeds"]],
        lambda r: r["seeds"].reverse(),
        lambda r: r["seeds"][0]["train"].update(steps=None),
        lambda r: r["seeds"][1].update(seed=3.0),
    ],
    ids=[
        "no seeds",
        "a seed missing",
        "a seed not an object",
        "every seed diverged",
        "seeds out of order",  # one seed's numbers would be labelled as another's
        "steps not a number",
        "a seed that is a float",  # 3.0 == 3 in Python: it must not pass as seed 3
    ],
)
def test_posenc_eval_refuses_seeds_that_do_not_add_up_before_evaluating(
    multi_seed_run, tmp_path, change
):
    copy = _copy_with_results(multi_seed_run[0], tmp_path, change)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    with pytest.raises(ConfigError, match="nothing was evaluated|no trained parameters"):
        reevaluate(copy, ["eval.max_len=14"], show_progress=False)
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before


def test_posenc_eval_accepts_a_setting_restated_at_its_stored_value(multi_seed_run, tmp_path):
    run_dir, _, results = multi_seed_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    again = reevaluate(copy, ["train.num_seeds=3", "seed=2"], show_progress=False)
    assert again["eval"]["token_acc"] == results["eval"]["token_acc"]
    with pytest.raises(ConfigError, match=r"cannot change \['train.num_seeds'\]"):
        reevaluate(copy, ["train.num_seeds=2"], tag="two", show_progress=False)


def test_a_sweep_folder_names_every_seed_of_its_run():
    assert seed_label(3, 1) == "seed3"
    assert seed_label(3, 3) == "seeds3-5"
    # Resolved before validation, which then refuses these with its own message.
    assert seed_label(0, "3") == seed_label(0, None) == seed_label(0, 1.5) == "seed0"
