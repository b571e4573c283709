"""The whole test suite, this checkout against another revision, run alternately.

Target (issue 12): the suite, both backends, within 60 s of wall time on a quiet 2-core
machine. On the development machines a fixed pure-Python loop has taken anywhere from 0.7 to
1.2 s of CPU time from one minute to the next, so one run of each side says little: this runs
``--pairs`` pairs, base then this checkout, and prints each run's wall time, the whole
machine's busy CPU-seconds (Linux ``/proc/stat``) and the loop's CPU time just before it,
then the per-pair ratios and their median.

    PFDB_REQUIRE_POSTGRES=1 python benchmarks/suite_benchmark.py --base HEAD~3 --pairs 3

The base revision is checked out with ``git worktree`` in a temporary folder and removed
afterwards. Each side's own ``pfdb`` is put first on ``PYTHONPATH``, so the CLI processes the
tests start run that side's code too. Arguments after ``--`` go to pytest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def busy_seconds() -> float:
    """CPU-seconds the whole machine has spent on anything but idling, since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def loop_cpu() -> float:
    """CPU time of a fixed pure-Python loop: how fast this machine's cores are right now."""
    start, total = time.process_time(), 0
    for i in range(5_000_000):
        total += i
    return time.process_time() - start


def run_suite(checkout: Path, pytest_args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))}
    loop = loop_cpu()
    busy, start = busy_seconds(), time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall, busy = time.perf_counter() - start, busy_seconds() - busy
    lines = result.stdout.strip().splitlines() or ["(no output)"]
    failed = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]  # pytest's -ra summary
    return {
        "wall": wall,
        "busy": busy,
        "loop": loop,
        "ok": result.returncode == 0,
        "summary": lines[-1].strip("= "),
        "failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the revision to compare with (a commit, tag or branch)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pfdb-suite-base-") as folder:
        base = Path(folder) / "checkout"
        added = subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base],
            capture_output=True,
            text=True,
            check=False,
        )
        if added.returncode != 0:
            sys.exit(f"cannot check out --base {args.base}: {(added.stderr.strip().splitlines() or ['?'])[-1]}")
        try:
            rows = []
            for pair in range(1, args.pairs + 1):
                for side, checkout in (("base", base), ("this", ROOT)):
                    row = {"pair": pair, "side": side, **run_suite(checkout, args.pytest_args)}
                    rows.append(row)
                    print(
                        f"pair {pair} {side:4s} {row['wall']:6.1f} s wall {row['busy']:6.1f} CPU-s busy "
                        f"loop {row['loop']:.2f} s  {row['summary']}",
                        flush=True,
                    )
                    for line in row["failed"]:
                        print(f"    {line}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    pairs = [(rows[i], rows[i + 1]) for i in range(0, len(rows), 2)]
    wall = [this["wall"] / base["wall"] for base, this in pairs]
    busy = [this["busy"] / base["busy"] for base, this in pairs]
    print(f"this / base ({args.base}), {len(pairs)} pairs on {os.cpu_count()} cores:")
    print(f"  wall  median {statistics.median(wall):.3f}  ({', '.join(f'{r:.3f}' for r in wall)})")
    print(f"  busy  median {statistics.median(busy):.3f}  ({', '.join(f'{r:.3f}' for r in busy)})")
    if not all(row["ok"] for row in rows):
        sys.exit("some runs failed: see their summaries above")


if __name__ == "__main__":
    main()
