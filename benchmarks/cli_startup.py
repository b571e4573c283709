"""How long `pfdb status` takes on an up-to-date SQLite database, beside `python -c pass`.

Target (issue 4): a median within 150 ms on the project's 2-core machine. Prints the
median of --runs runs of each command, measured in one run so the ratios compare.
``pfdb status`` reads its drift answer from a cache after the first run; the
"uncached" line is the cost of computing it (the first run after a model or migration
change, and every ``pfdb check``).

    python benchmarks/cli_startup.py --runs 21
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def median_ms(args: list[str], runs: int, env: dict[str, str], cwd: str) -> tuple[float, float]:
    """Median wall-clock and median CPU (user + system) milliseconds of ``runs`` runs.

    CPU time is printed beside wall time because this shared machine stalls processes
    now and then; CPU time shows the work the command itself does.
    """
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        walls.append((time.perf_counter() - start) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    pfdb_cmd = [sys.executable, str(ROOT / "bin" / "pfdb")]
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{folder}/bench.db", "XDG_CACHE_HOME": f"{folder}/cache"}
        env.pop("PFDB_MIGRATIONS_DIR", None)
        # A cache folder that cannot be created: status recomputes the drift every run.
        Path(folder, "not-a-folder").write_text("")
        uncached = {**env, "XDG_CACHE_HOME": f"{folder}/not-a-folder"}
        subprocess.run([*pfdb_cmd, "init"], env=env, cwd=folder, check=True, stdout=subprocess.DEVNULL)
        cases = [
            ("python -c pass", [sys.executable, "-c", "pass"], env),
            ("python -c 'import pfdb'", [sys.executable, "-c", "import pfdb"], env),
            ("pfdb status --no-drift", [*pfdb_cmd, "status", "--no-drift"], env),
            ("pfdb status", [*pfdb_cmd, "status"], env),
            ("pfdb status, drift uncached", [*pfdb_cmd, "status"], uncached),
            ("pfdb health", [*pfdb_cmd, "health"], env),
        ]
        results = [(label, median_ms(cmd, args.runs, case_env, folder)) for label, cmd, case_env in cases]
    base = results[0][1][0]
    print(
        f"median of {args.runs} runs on {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} "
        "(target: pfdb status <= 150 ms)"
    )
    for label, (wall, cpu) in results:
        print(f"{label:28s} {wall:7.1f} ms wall  {cpu:7.1f} ms cpu  {wall / base:5.1f}x python -c pass")


if __name__ == "__main__":
    main()
