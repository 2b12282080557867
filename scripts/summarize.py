"""Print a markdown table (mean ± std over seeds) from every results.json under a folder.

    python scripts/summarize.py multirun/2026-11-29/16-00-00

Rows group runs by (task, scoring, encoding), where scoring is "encoder", or a decoder's
"greedy" or "teacher_forced" (results.json's eval.scoring): runs scored differently are never
averaged together. Columns are in- and out-of-distribution token accuracy, and the number of
seeds. Runs that did not finish are listed, not averaged.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def _cell(values: list[float | None]) -> str:
    if any(v is None for v in values):
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for path in sorted(args.folder.rglob("results.json")):
        results = json.loads(path.read_text())
        if results["status"] != "completed":
            print(f"skipped (status {results['status']}): {path}")
            continue
        scoring = results["eval"]["scoring"]
        groups[(results["task"], scoring, results["encoding"])].append(results)
    print("| task | scoring | encoding | acc_id | acc_ood | exact match ood | seeds | steps/s |")
    print("|---|---|---|---|---|---|---|---|")
    for (task, scoring, encoding), runs in sorted(groups.items()):
        ev = [r["eval"] for r in runs]
        speed = statistics.mean(r["train"]["steps_per_s"] for r in runs)
        print(
            f"| {task} | {scoring} | {encoding} | {_cell([e['acc_id'] for e in ev])} | "
            f"{_cell([e['acc_ood'] for e in ev])} | {_cell([e['seq_acc_ood'] for e in ev])} | "
            f"{len(runs)} | {speed:.0f} |"
        )


if __name__ == "__main__":
    main()
