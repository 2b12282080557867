"""Every results.json says which code, libraries, device and command produced it."""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import jax

from posenc_jax.provenance import git_state, provenance

REPO_ROOT = Path(__file__).parents[1]


def test_provenance_names_the_commit_versions_device_flags_and_command(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/some/bin/posenc-train", "task=reverse", "seed=3 x"])
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")
    record = provenance()
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert record["commit"] == head and isinstance(record["dirty"], bool)
    for library in ("jax", "jaxlib", "flax", "optax"):
        assert record[library] == importlib.metadata.version(library)
    assert record["device"] == {
        "platform": jax.devices()[0].platform,
        "kind": jax.devices()[0].device_kind,
        "count": jax.device_count(),
        "processes": 1,
    }
    assert record["xla_flags"] == "--xla_gpu_deterministic_ops=true"
    assert record["command"] == "posenc-train task=reverse 'seed=3 x'"  # pasteable in a shell


def test_outside_a_repository_commit_and_dirty_are_null(tmp_path):
    assert git_state(tmp_path) == (None, None)


def test_a_dirty_working_tree_is_flagged(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    commit, dirty = git_state(tmp_path)
    assert len(commit or "") == 40 and dirty is False
    (tmp_path / "a.txt").write_text("2")
    assert git_state(tmp_path) == (commit, True)
