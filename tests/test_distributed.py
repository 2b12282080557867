"""Several hosts (train.distributed): two processes, as SLURM's srun would start them, train one
run over their 2 + 2 CPU devices; it equals the one-process run, only process 0 writes the run
folder, and posenc-eval reads its checkpoint back in one process.

The two processes are this file run as a script, with the environment variables srun sets
(jax.distributed.initialize() reads them, exactly as on a cluster) and gloo for the collectives
between CPU processes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from posenc_jax.errors import ConfigError
from posenc_jax.reevaluate import reevaluate
from posenc_jax.run import run

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from helpers import TIMING, make_settings, without_timing  # noqa: E402

# The runs of the two processes: seeds split over the 4 devices (one replica each), and each
# batch split over them.
RUNS = {
    "seeds": ("task=reverse", "train.sharding=seeds", "train.num_seeds=4"),
    "data": ("task=reverse", "train.sharding=data"),
}


def slurm_job_id_with_free_port() -> int:
    """A SLURM job id whose coordinator port (JAX: 61440 + id mod 4096) is free here."""
    for port in range(61440 + os.getpid() % 4096, 65536):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port - 61440
    raise RuntimeError("no free port in 61440-65535")


@pytest.fixture(scope="module")
def distributed_runs(tmp_path_factory):
    """The folders of RUNS, each trained by two processes together."""
    out = tmp_path_factory.mktemp("distributed")
    job_id = slurm_job_id_with_free_port()
    processes = []
    for rank in range(2):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
            "SLURM_JOB_ID": str(job_id),
            "SLURM_STEP_NODELIST": "127.0.0.1",
            "SLURM_NTASKS": "2",
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, __file__, str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    # What each process's run() returned, for each run.
    returned = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    return out, returned


@pytest.mark.parametrize("name", RUNS)
def test_a_run_over_two_processes_equals_one_process(distributed_runs, name, tmp_path):
    out, returned = distributed_runs
    written = json.loads((out / name / "results.json").read_text())
    on_one_device = [o for o in RUNS[name] if not o.startswith("train.sharding")]
    alone = run(make_settings(*on_one_device), tmp_path / "alone", show_progress=False)
    # Both processes return the same results: those written, and those of one process alone.
    assert (
        # each process measures its own time; their provenance records must agree
        without_timing(returned[0][name], TIMING)
        == without_timing(returned[1][name], TIMING)
        == without_timing(written, TIMING)
    )
    assert written["provenance"]["device"]["count"] == 4
    assert written["provenance"]["device"]["processes"] == 2
    per_seed = [results.get("seeds", [results]) for results in (written, alone)]
    assert [s["eval"]["token_acc"] for s in per_seed[0]] == [
        s["eval"]["token_acc"] for s in per_seed[1]
    ]
    assert [s["train"]["final_loss"] for s in per_seed[0]] == pytest.approx(
        [s["train"]["final_loss"] for s in per_seed[1]], rel=1e-5
    )


@pytest.mark.parametrize("name", RUNS)
def test_only_process_zero_writes_the_run_folder(distributed_runs, name):
    folder = distributed_runs[0] / name
    logs = [folder] + sorted(folder.glob("seed_*"))
    assert len(logs) == (5 if name == "seeds" else 1)
    for log in logs:
        events = EventAccumulator(str(log), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:  # a second writer would log each step again
            steps = [event.step for event in events.Scalars(tag)]
            assert len(steps) == len(set(steps)), tag
        lines = [json.loads(line) for line in (log / "metrics.jsonl").read_text().splitlines()]
        # Training at steps 10 and 20, evaluation at 20: each line once, from one writer.
        logged = [(line["step"], tuple(sorted(line))) for line in lines]
        assert len(set(logged)) == len(logged)
    # The checkpoint holds both processes' pieces.
    assert sorted(p.name for p in (folder / "checkpoint").glob("ocdbt.process_*")) == [
        "ocdbt.process_0",
        "ocdbt.process_1",
    ]


def test_posenc_eval_reads_a_distributed_checkpoint_in_one_process(distributed_runs):
    folder = distributed_runs[0] / "seeds"
    recorded = json.loads((folder / "results.json").read_text())
    again = reevaluate(folder, ["train.sharding=null"], show_progress=False)
    for before, after in zip(recorded["seeds"], again["seeds"], strict=True):
        assert after["eval"]["token_acc"] == before["eval"]["token_acc"]


@pytest.mark.parametrize("name", ["other_settings", "other_folder"])
def test_processes_given_different_runs_are_refused_before_writing(distributed_runs, name):
    out, returned = distributed_runs
    for rank, by_process in enumerate(returned):
        assert by_process[name].startswith(
            "The 2 processes of this distributed run were not given the same settings and run "
            f"folder: process(es) [1] differ from process 0 (this is process {rank}"
        )
    assert not (out / name).exists()


def test_distributed_without_sharding_is_refused():
    with pytest.raises(ConfigError, match="choose train.sharding=data .* or train.sharding=seeds"):
        make_settings("train.distributed=true")


def test_distributed_outside_a_cluster_is_refused_before_anything_is_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "PMI"))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "posenc_jax",
            "train.distributed=true",
            "train.sharding=seeds",
            "train.num_seeds=2",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "train.distributed=true joins the processes that a cluster launcher started" in (
        done.stderr
    )
    assert not (tmp_path / "run" / "config.yaml").exists()


if __name__ == "__main__":
    out, rank = Path(sys.argv[1]), int(os.environ["SLURM_PROCID"])
    returned = {}
    for name, overrides in RUNS.items():
        settings = make_settings(*overrides, "train.distributed=true")
        returned[name] = run(settings, out / name, show_progress=False)
    # Processes that were not given the same run: another learning rate, another folder.
    mismatched = {
        "other_settings": (f"optim.learning_rate=0.00{rank + 1}", "same"),
        "other_folder": ("optim.learning_rate=0.001", f"own_{rank}"),
    }
    for name, (override, folder) in mismatched.items():
        settings = make_settings(*RUNS["data"], "train.distributed=true", override)
        try:
            run(settings, out / name / folder, show_progress=False)
        except ConfigError as error:
            returned[name] = str(error)
    print(json.dumps(returned))
