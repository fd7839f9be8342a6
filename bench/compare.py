"""Did a figure regress between two bench/run.py reports? (issue 10: no figure may regress more
than 10% between commits.)

    python bench/compare.py bench/results/run-A.json bench/results/run-B.json [--threshold 0.1]
    python bench/compare.py --latest [--threshold 0.1]    # the two newest run-*.json

The machines are shared and noisy, so a figure of ours is compared as a ratio to
Distribution's figure in the same run (both ran interleaved on the same machine at the same
time), and only where both reports have it; where a report has no Distribution figure for
it, the raw figures are compared and marked `raw`. A change is a regression when the ratio
moved the wrong way (lower for MB/s and req/s, higher for CPU, RSS, latency and seconds) by
more than the threshold. Reports from different machines (CPU model or count) are refused.
Exit status: 0 no regression, 1 regressions, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from run import DISTRIBUTION, HIGHER, RESULTS_DIR, median, rows_for

OURS = ("ours-fs", "ours-s3", "ours-rgw", "ours-fs-granian", "ours-fs-nofsync", "ours-fs-cache")


def normalized(report: dict[str, Any], section: str, op: str, target: str,
               metric: str) -> tuple[float, bool] | None:
    """Our figure over Distribution's in the same run (True), or the raw figure (False)."""
    summary = report.get("summary", {}).get(section, {})
    ours = median(summary, op, target, metric)
    if ours is None:
        return None
    ref_op = "pull" if op == "pull-streamed" else op
    ref = median(summary, ref_op, DISTRIBUTION, metric)
    if ref:
        return ours / ref, True
    return ours, False


def compare(base: dict[str, Any], new: dict[str, Any],
            threshold: float) -> list[dict[str, Any]]:
    rows = []
    levels = tuple(new.get("sizes", {}).get("levels", (1, 16, 64)))
    for section in new.get("summary", {}):
        if section == "limits" or section not in base.get("summary", {}):
            continue
        for op, metric, label, better in rows_for(section, levels):
            for target in OURS:
                a = normalized(base, section, op, target, metric)
                b = normalized(new, section, op, target, metric)
                if a is None or b is None or a[1] != b[1] or a[0] == 0:
                    continue
                change = b[0] / a[0] - 1
                worse = -change if better == HIGHER else change
                rows.append({"section": section, "target": target, "figure": label,
                             "relative": a[1], "base": a[0], "new": b[0], "change": change,
                             "regression": worse > threshold})
    return rows


def full_runs(exclude: Path | None = None) -> list[Path]:
    """The full-size (not --quick) run-<timestamp>.json reports, oldest first."""
    runs = []
    for path in sorted(RESULTS_DIR.glob("run-2*.json")):
        if exclude is not None and path.resolve() == exclude.resolve():
            continue
        try:
            if not json.loads(path.read_text()).get("args", {}).get("quick"):
                runs.append(path)
        except (OSError, ValueError):
            continue
    return runs


def latest_two() -> tuple[Path, Path]:
    runs = full_runs()
    if len(runs) < 2:
        raise SystemExit(f"fewer than two full run-*.json reports in {RESULTS_DIR}")
    return runs[-2], runs[-1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", nargs="?", type=Path)
    p.add_argument("new", nargs="?", type=Path)
    p.add_argument("--latest", action="store_true", help="the two newest run-*.json reports")
    p.add_argument("--threshold", type=float, default=0.10)
    p.add_argument("--regressions-only", action="store_true", help="list regressions only")
    args = p.parse_args(argv)
    if args.latest:
        args.base, args.new = latest_two()
    if args.base is None or args.new is None:
        p.error("give two reports, or --latest")
    try:
        base, new = (json.loads(path.read_text()) for path in (args.base, args.new))
    except (OSError, ValueError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    machines = [(r["machine"].get("cpu_model"), r["machine"].get("nproc")) for r in (base, new)]
    if machines[0] != machines[1]:
        print(f"compare: different machines {machines[0]} and {machines[1]}", file=sys.stderr)
        return 2
    rows = compare(base, new, args.threshold)
    print(f"base {args.base.name} (git {str(base.get('git_commit'))[:10]}), "
          f"new {args.new.name} (git {str(new.get('git_commit'))[:10]}); "
          f"figures relative to Distribution in the same run unless marked raw")
    for r in rows:
        if args.regressions_only and not r["regression"]:
            continue
        mark = "REGRESSION" if r["regression"] else ""
        kind = "" if r["relative"] else " raw"
        print(f"  {r['section']:<12} {r['target']:<16} {r['figure']:<34} "
              f"{r['base']:>9.3f} -> {r['new']:>9.3f}{kind}  {r['change']:+6.1%}  {mark}")
    regressions = [r for r in rows if r["regression"]]
    print(f"{len(regressions)} regression(s) beyond {args.threshold:.0%} in {len(rows)} figures")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
