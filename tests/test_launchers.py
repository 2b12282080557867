"""Sweeps past one process with existing engines: the SLURM preset (hydra-submitit-launcher)
and the code path it shares with submitit's local executor."""

import json
import subprocess
import sys

from helpers import FAST, compose_config


def test_the_slurm_preset_is_an_array_job_of_one_gpu_runs():
    launcher = compose_config(["hydra/launcher=slurm"], hydra=True).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
    assert launcher.timeout_min == 240 and launcher.partition is None
    assert list(launcher.setup) == ["export XLA_PYTHON_CLIENT_PREALLOCATE=false"]


def test_a_two_job_sweep_finishes_through_submitits_local_executor(tmp_path):
    """The same launcher code as SLURM (pickled jobs run by submitit in their own processes),
    with the local executor that CI can run. In a subprocess: submitit's job processes write to
    the terminal that pytest's capture would have closed."""
    argv = [
        "-m",
        "hydra/launcher=submitit_local",
        "encoding=nope,alibi",
        "task=copy",
        "train.num_seeds=2",  # each job two seeds, vmapped
        *FAST,
    ]
    done = subprocess.run(
        [sys.executable, "-m", "posenc_jax", *argv, f"hydra.sweep.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("results.json"))]
    assert sorted(r["encoding"] for r in results) == ["alibi", "nope"]
    assert all(r["status"] == "completed" for r in results)
    assert all([s["seed"] for s in r["seeds"]] == [0, 1] for r in results)
    folders = sorted(p.parent.name for p in tmp_path.rglob("results.json"))
    assert folders == ["0_nope_copy_seeds0-1", "1_alibi_copy_seeds0-1"]
    assert (tmp_path / ".submitit").is_dir()  # submitit ran them
