"""Determinism on CPU: one command run twice, in two processes, writes the same results.json
(timing fields aside), metrics.jsonl and trained parameters, bit for bit. A run split by a
resume is held to the same standard in test_resume.py."""

import json

import jax
import numpy as np

from posenc_jax.checkpoint import restore_params

from helpers import FAST, make_settings, posenc_train, without_timing

# Two seeds as a batch axis, two length buckets and a decoder scored by greedy decoding: the
# paths where an order of operations could vary between processes.
COMMAND = [
    *FAST,
    "task=reverse",
    "model.causal=true",
    "train.num_seeds=2",
    "train.length_buckets=2",
    "train.checkpoint_every=10",
]


def test_one_command_run_twice_writes_identical_results(tmp_path):
    folders = [tmp_path / "first", tmp_path / "second"]
    for folder in folders:
        done = posenc_train(*COMMAND, f"hydra.run.dir={folder}")
        assert done.returncode == 0, done.stderr[-2000:]
    first, second = (json.loads((folder / "results.json").read_text()) for folder in folders)
    assert without_timing(first) == without_timing(second)
    assert first["eval"]["scoring"] == "greedy" and len(first["seeds"]) == 2
    for log in (".", "seed_0", "seed_1"):
        assert (folders[0] / log / "metrics.jsonl").read_bytes() == (
            folders[1] / log / "metrics.jsonl"
        ).read_bytes()
    settings = make_settings(*COMMAND)
    params = [jax.tree.leaves(restore_params(folder, settings)[1]) for folder in folders]
    assert len(params[0]) == len(params[1]) > 0
    for a, b in zip(*params, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
