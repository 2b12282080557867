"""What seeds as a batch axis save: N seeds in one vmapped run (`train.num_seeds=N`) against the
same N seeds as a sweep of separate runs, end to end, each through `posenc-train` as a user
runs it (start-up, compilation, training, evaluation, every output written).

    python scripts/seed_batch_cost.py                        # 8 seeds, the default run
    python scripts/seed_batch_cost.py --seeds 3 encoding=alibi task=reverse

Each side starts from its own empty persistent compilation cache, as on a fresh machine; the
sweep's later jobs then load its first job's programs from that cache, as a user's sweep does.
Prints both wall times, their ratio, and the two sides' mean accuracies. A replica equals the
run of its seed to float rounding, step by step; over thousands of steps the two programs'
different rounding can still move a long-length accuracy by a little, as any change of
program does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(command: list[str], cache: Path) -> float:
    start = time.perf_counter()
    env = {**os.environ, "POSENC_JAX_CACHE": str(cache)}
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr.decode()[-2000:]}")
    return time.perf_counter() - start


def mean_of(folder: Path, key: str) -> float:
    """The mean of eval[key] over every seed whose results.json lies below folder."""
    values = []
    for path in folder.rglob("results.json"):
        results = json.loads(path.read_text())
        replicas = results.get("seeds") or [results]
        values += [replica["eval"][key] for replica in replicas]
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("overrides", nargs="*", help="posenc-train overrides for both sides")
    args = parser.parse_args()
    train = [sys.executable, "-m", "posenc_jax"]
    seeds = ",".join(str(seed) for seed in range(args.seeds))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        vmapped = timed(
            [
                *train,
                *args.overrides,
                f"train.num_seeds={args.seeds}",
                f"hydra.run.dir={root / 'vmapped'}",
            ],
            root / "cache_vmapped",
        )
        sequential = timed(
            [
                *train,
                "-m",
                *args.overrides,
                f"seed={seeds}",
                f"hydra.sweep.dir={root / 'sequential'}",
            ],
            root / "cache_sequential",
        )
        print(f"{args.seeds} seeds, overrides {args.overrides or 'none'}")
        print(f"  vmapped (train.num_seeds={args.seeds}): {vmapped:7.1f} s")
        print(f"  sequential (-m seed={seeds}): {sequential:7.1f} s")
        print(f"  ratio vmapped / sequential: {vmapped / sequential:.2f}")
        for key in ("acc_id", "acc_ood"):
            one, other = mean_of(root / "vmapped", key), mean_of(root / "sequential", key)
            print(f"  mean {key}: vmapped {one:.4f}, sequential {other:.4f}")


if __name__ == "__main__":
    main()
