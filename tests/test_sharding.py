"""Several devices (train.sharding): on 4 simulated CPU devices, a run split by data or by seeds
equals the one-device run, its work is really split, and it compiles once.

JAX fixes the number of CPU devices when it starts, so the checks run in a fresh interpreter
started with XLA_FLAGS=--xla_force_host_platform_device_count=4 (this file, run as a script),
which reports what it saw as JSON."""

import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from posenc_jax.compilation import CompilationCounter
from posenc_jax.errors import ConfigError
from posenc_jax.evaluate import evaluate_seeds
from posenc_jax.length_buckets import passes_per_step, training_buckets
from posenc_jax.reevaluate import reevaluate
from posenc_jax.run import run
from posenc_jax.sharding import device_mesh, place_state, require_even_passes
from posenc_jax.train import init_state, make_train_chunk, train

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from helpers import make_settings  # noqa: E402


def max_difference(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def compare(*overrides: str) -> dict:
    """Train and evaluate with and without train.sharding; how the two differ, and how the
    sharded run placed and compiled its work."""
    alone = make_settings("task=reverse", *overrides)
    split = make_settings("task=reverse", *overrides, f"train.sharding={overrides_axis(overrides)}")
    one, many = train(alone, lambda *_: None), train(split, lambda *_: None)
    evaluations = [
        evaluate_seeds(settings, outcome.graphdef, outcome.params)
        for settings, outcome in ((alone, one), (split, many))
    ]
    graphdef, state, optimizer = init_state(split)
    state = place_state(state, device_mesh(split))
    chunk = make_train_chunk(split, graphdef, optimizer, 5)
    with CompilationCounter() as compiled:
        for _ in range(3):
            state, _ = chunk(state)
    leaf = jax.tree.leaves(many.params)[0]
    hlo = chunk.lower(state).compile().as_text()
    return {
        "devices": jax.device_count(),
        "param_difference": max_difference(one.params, many.params),
        "token_acc": [[e["token_acc"] for e in seeds] for seeds in evaluations],
        "params_spread_over": len(leaf.sharding.device_set),
        "params_spec": str(leaf.sharding.spec),
        # Gradients summed across devices: an all-reduce of floats. (Reading the replicas'
        # common step is one int32 all-reduce per chunk, which does not count.)
        "float_all_reduce": any(
            "f32" in line.split(" all-reduce(")[0].split("=", 1)[-1]
            for line in hlo.splitlines()
            if " all-reduce(" in line
        ),
        "compilations": compiled.count,
    }


def overrides_axis(overrides) -> str:
    return "seeds" if any(o.startswith("train.num_seeds") for o in overrides) else "data"


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    """The report of this file run as a script on 4 devices; it also leaves a finished run,
    its seeds split over the 4 devices, in report["run_dir"]."""
    run_dir = tmp_path_factory.mktemp("sharded") / "run"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run(
        [sys.executable, __file__, str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "run_dir": run_dir}


def test_batch_split_over_devices_equals_one_device(four_devices):
    data = four_devices["data"]
    assert data["devices"] == 4
    assert data["param_difference"] < 1e-5
    assert data["token_acc"][0] == data["token_acc"][1]
    # Replicated parameters, and gradients summed across the devices' shares of the batch.
    assert data["params_spread_over"] == 4 and data["params_spec"] == "P()"
    assert data["float_all_reduce"] and data["compilations"] == 1


def test_seeds_split_over_devices_equal_one_device(four_devices):
    seeds = four_devices["seeds"]
    assert seeds["param_difference"] < 1e-6
    assert seeds["token_acc"][0] == seeds["token_acc"][1]
    # One replica per device, and nothing to communicate between them.
    assert seeds["params_spread_over"] == 4 and seeds["params_spec"] == "P('seeds',)"
    assert not seeds["float_all_reduce"] and seeds["compilations"] == 1


def test_length_buckets_split_over_devices_equal_one_device(four_devices):
    """Two buckets of 8 examples, each split 2 per device, and 10 evaluation examples per length
    in a chunk padded to 12 (3 per device)."""
    buckets = four_devices["data_buckets"]
    assert buckets["param_difference"] < 1e-5
    assert buckets["token_acc"][0] == buckets["token_acc"][1]
    assert buckets["float_all_reduce"] and buckets["compilations"] == 1


def test_a_data_split_run_is_evaluated_again_on_its_devices(four_devices):
    assert four_devices["data_reevaluated"]


def test_work_that_does_not_split_evenly_is_refused(four_devices):
    assert four_devices["uneven"] == (
        "train.sharding=seeds splits train.num_seeds=3 over the 4 visible cpu device(s), which "
        "does not divide evenly; choose a multiple of 4, set train.sharding=null for one "
        "device, or make fewer devices visible "
        "(XLA_FLAGS=--xla_force_host_platform_device_count)."
    )
    # Lengths 1..6 in 4 buckets of 1, 1, 2 and 2 lengths: 16 examples share as 3, 3, 5 and 5;
    # the nearest batch that splits is 24 (4, 4, 8 and 8; 12 gives 2, 2, 4, 4 and 20 gives
    # 3, 3, 7, 7).
    assert four_devices["uneven_buckets"] == (
        "train.sharding=data splits every pass of a training step over the 4 visible cpu "
        "devices, but the passes hold [3, 3, 5, 5] examples (train.batch_size=16 shared by "
        "train.length_buckets=4 buckets in proportion to their numbers of lengths); each must "
        "be a multiple of 4. Choose train.batch_size=24, set train.sharding=null for one "
        "device, or make fewer devices visible (XLA_FLAGS=--xla_force_host_platform_device_count)."
    )
    assert four_devices["uneven_slices"].endswith(
        "[3, 3, 3, 3, 3, 1] examples (train.batch_size=16, in slices of train.microbatch=3); "
        "each must be a multiple of 4. Choose train.microbatch=4, set train.sharding=null for "
        "one device, or make fewer devices visible "
        "(XLA_FLAGS=--xla_force_host_platform_device_count)."
    )


@functools.cache
def data_sharded_reverse():
    return make_settings("task=reverse", "train.sharding=data")


@settings(max_examples=300, deadline=None)
@given(
    num_lengths=st.integers(1, 40),
    batch_size=st.integers(1, 200),
    devices=st.integers(2, 8),
    data=st.data(),
)
def test_every_suggested_split_splits(num_lengths, batch_size, devices, data):
    """Whatever the batch, buckets and slices, the batch size and microbatch that a refusal
    suggests are accepted: one refusal, never a second."""
    count = data.draw(st.integers(1, min(num_lengths, batch_size, 32)))
    microbatch = data.draw(st.none() | st.integers(1, batch_size))
    buckets = training_buckets(1, num_lengths, count, batch_size)
    assume(passes_per_step(buckets, microbatch) <= 32)  # else refused before, by validation
    base = data_sharded_reverse()
    task = dataclasses.replace(base.task, train_min_len=1, train_max_len=num_lengths)
    train = dataclasses.replace(
        base.train, batch_size=batch_size, length_buckets=count, microbatch=microbatch
    )
    asked = dataclasses.replace(base, task=task, train=train)
    try:
        require_even_passes(asked, devices)
    except ConfigError as error:
        message = str(error)
    else:
        return
    suggested = re.findall(r"train\.(batch_size|microbatch)=(\d+)", message.split("Choose")[1])
    assert suggested, message
    changes = {key: int(value) for key, value in suggested}
    fixed = dataclasses.replace(asked, train=dataclasses.replace(asked.train, **changes))
    require_even_passes(fixed, devices)


def test_a_run_split_over_devices_is_evaluated_again_on_one(four_devices):
    """posenc-eval on a machine with other devices: the checkpoint is restored onto this one,
    and with train.sharding=null the numbers are those the 4-device run recorded."""
    recorded = json.loads((four_devices["run_dir"] / "results.json").read_text())
    again = reevaluate(four_devices["run_dir"], ["train.sharding=null"], show_progress=False)
    assert [s["seed"] for s in again["seeds"]] == [0, 1, 2, 3]
    for before, after in zip(recorded["seeds"], again["seeds"], strict=True):
        assert after["eval"]["token_acc"] == before["eval"]["token_acc"]


def test_one_device_accepts_either_sharding():
    for axis in ("data", "seeds"):
        mesh = device_mesh(make_settings(f"train.sharding={axis}", "train.num_seeds=3"))
        assert mesh is not None and mesh.devices.size == jax.device_count()


def test_seed_sharding_of_a_single_seed_is_refused():
    with pytest.raises(ConfigError, match="train.num_seeds=1 has one replica and nothing to split"):
        device_mesh(make_settings("train.sharding=seeds"))


def test_an_unknown_sharding_names_the_choices():
    with pytest.raises(ConfigError, match=r"valid choices are \['data', 'seeds'\], or null"):
        make_settings("train.sharding=model")


if __name__ == "__main__":
    report = {
        "data": compare(),
        "seeds": compare("train.num_seeds=4"),
    }
    split = make_settings("task=reverse", "train.sharding=seeds", "train.num_seeds=4")
    run(split, sys.argv[1], show_progress=False)
    report["data_buckets"] = compare("train.length_buckets=2", "eval.examples_per_length=10")
    # A data-split run evaluated again on the same 4 devices: the restored parameters are
    # placed on the mesh (they were left on one device, which the mesh's constraints refused).
    data_dir = Path(sys.argv[1]).parent / "data_run"
    recorded = run(make_settings("task=reverse", "train.sharding=data"), data_dir, False)
    again = reevaluate(data_dir, [], show_progress=False)
    report["data_reevaluated"] = again["eval"]["token_acc"] == recorded["eval"]["token_acc"]
    uneven = {
        "uneven": ("train.sharding=seeds", "train.num_seeds=3"),
        "uneven_buckets": ("task=reverse", "train.sharding=data", "train.length_buckets=4"),
        "uneven_slices": ("task=reverse", "train.sharding=data", "train.microbatch=3"),
    }
    for name, overrides in uneven.items():
        try:
            device_mesh(make_settings(*overrides))
        except ConfigError as error:
            report[name] = str(error)
    print(json.dumps(report))
