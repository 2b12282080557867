"""posenc-bench's arithmetic and its sanity check (speed itself is never tested)."""

import copy

import pytest

from posenc_jax.bench import (
    CASES,
    QUICK_CASES,
    _cost_analysis,
    main,
    sanity_problems,
    train_step_flops,
)
from posenc_jax.train import init_state, make_train_chunk

from helpers import make_settings


@pytest.mark.parametrize(
    "overrides",
    [
        (
            "encoding=nope",
            "model.d_model=128",
            "task.train_max_len=24",
            "eval.max_len=24",
            "train.batch_size=32",
        ),
        ("encoding=nope", "model.d_model=128", "train.num_seeds=2", "model.num_layers=3"),
        # Length buckets: three groups at their own widths, each counted by both.
        (
            "encoding=nope",
            "model.d_model=128",
            "task.train_max_len=24",
            "eval.max_len=24",
            "train.length_buckets=3",
        ),
    ],
)
def test_analytic_flops_agree_with_xla(overrides):
    """The analytic count is the matmuls only; XLA counts everything in the compiled step (the
    optimizer, norms, softmax, data generation), so it is a little above, never below.

    XLA counts a scan's body once: a chunk of any length is costed as one step."""
    settings = make_settings(*overrides)
    graphdef, state, optimizer = init_state(settings)
    compiled = make_train_chunk(settings, graphdef, optimizer, 5).lower(state).compile()
    ratio = _cost_analysis(compiled)["flops"] / train_step_flops(settings)
    assert 1.0 <= ratio <= 1.15


def test_analytic_flops_of_the_paper_config():
    """Ruoss et al.'s encoder (5 layers, d 64, batch 128, 80 slots): about 18 GFLOP a step, as
    counted by hand in the issue that introduced posenc-bench."""
    (paper_rope,) = [case for case in CASES if case.name == "paper-rope"]
    settings = make_settings(*paper_rope.overrides, fast=False)
    d, slots, layers = 64, 80, 5
    per_example = layers * (24 * slots * d * d + 4 * slots**2 * d) + 2 * slots * d * 16
    assert settings.task.num_outputs == 16
    assert train_step_flops(settings) == 3 * 128 * per_example
    assert 18.2e9 < train_step_flops(settings) < 18.4e9


def test_analytic_flops_with_buckets_count_each_bucket_at_its_width():
    """Four buckets of lengths 1-40, 32 of the 128 examples each, padded to 20, 40, 60 and 80
    slots: 32 examples' FLOPs at each of those four widths."""
    (paper_rope,) = [case for case in CASES if case.name == "paper-rope"]
    bucketed = make_settings(*paper_rope.overrides, "train.length_buckets=4", fast=False)

    def flops(slots):
        d = 64
        return 3 * 32 * (5 * (24 * slots * d * d + 4 * slots**2 * d) + 2 * slots * d * 16)

    expected = sum(flops(slots) for slots in (20, 40, 60, 80))
    assert train_step_flops(bucketed) == pytest.approx(expected, rel=1e-12)


def good_document():
    step_case = {
        "name": "paper-rope",
        "compile_s": 5.0,
        "step_s": 0.45,
        "tokens_per_s": 22e3,
        "flops_per_s": 40e9,
        "flops_per_step": 18.3e9,
        "xla_flops_per_step": 19.4e9,
        "eval_s": 12.0,
        "eval_compilations": 3,
        "forward_s_per_token": 15e-6,
        "eval_s_per_token": 20e-6,
    }
    whole_run = {
        "name": "end-to-end",
        "wall_s": 700.0,
        "train_s": 450.0,
        "steps_per_s": 2.2,
        "eval_s": 250.0,
        "eval_compilations": 3,
    }
    return {"matmul": {"flops_per_s": 130e9}, "cases": [step_case, whole_run]}


def test_sanity_accepts_a_sane_document():
    assert sanity_problems(good_document()) == []
    uncounted = copy.deepcopy(good_document())
    uncounted["cases"][0]["xla_flops_per_step"] = None  # a backend whose analysis has no "flops"
    assert sanity_problems(uncounted) == []


@pytest.mark.parametrize(
    ("case", "key", "value", "expected"),
    [
        (0, "step_s", 0.0, "paper-rope.step_s = 0.0 is not a positive finite number"),
        (0, "tokens_per_s", float("nan"), "paper-rope.tokens_per_s = nan"),
        (0, "xla_flops_per_step", 183e9, "10.00x the analytic"),
        (0, "eval_compilations", 0, "paper-rope: evaluation compiled nothing"),
        (0, "eval_s_per_token", -1.0, "paper-rope.eval_s_per_token = -1.0"),
        (1, "wall_s", float("inf"), "end-to-end.wall_s = inf"),
        (1, "eval_s", None, "end-to-end.eval_s = None"),
    ],
)
def test_sanity_names_each_problem(case, key, value, expected):
    document = copy.deepcopy(good_document())
    document["cases"][case][key] = value
    (problem,) = sanity_problems(document)
    assert expected in problem


def test_quick_cases_exist():
    assert set(QUICK_CASES) <= {case.name for case in CASES}


@pytest.mark.parametrize("where", ["missing/bench.json", "."])
def test_an_unwritable_json_path_is_refused_before_measuring(tmp_path, capsys, where):
    with pytest.raises(SystemExit) as exit_info:
        main(["--quick", "--json", str(tmp_path / where)])
    assert exit_info.value.code == 2
    assert "cannot be written: choose a file in an existing folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.length_buckets=0"], "train.length_buckets=0 cannot cut the"),
        (["train.nonsense=1"], "Could not override 'train.nonsense'"),
        # The devices are checked too, as posenc-train checks them.
        (["train.sharding=seeds"], "train.num_seeds=1 has one replica and nothing to split"),
        (
            ["train.distributed=true", "train.sharding=seeds", "train.num_seeds=2"],
            "posenc-bench measures one process; train.distributed=true",
        ),
    ],
)
def test_a_bad_override_is_refused_before_measuring(tmp_path, capsys, overrides, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--quick", "--json", str(tmp_path / "b.json"), "--set", *overrides])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "case default:" in err and message in err
