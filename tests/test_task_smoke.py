"""Every task trains a few steps in encoder and decoder mode, through the composed config users
get, with a finite loss. (That each task's data is right is test_tasks.py's job.)"""

import math

import pytest

from posenc_jax.tasks import available
from posenc_jax.train import train

from conftest import make_settings

# The smallest run that still takes real optimizer steps: compile time dominates here.
TINY = ["train.steps=2", "train.log_every=2", "train.steps_per_dispatch=2", "optim.warmup_steps=1",
        "train.batch_size=8", "model.num_layers=1", "model.d_model=16", "model.num_heads=2"]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("task", available())
def test_every_task_trains_in_both_modes(task, causal):
    settings = make_settings(f"task={task}", f"model.causal={causal}", *TINY)
    summary = train(settings, lambda *_: None).summary
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert math.isfinite(summary["final_loss"])
