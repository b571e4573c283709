"""How long `pfdb status` takes on an up-to-date SQLite database, beside `python -c pass`.

Target (issue 4): a median within 150 ms on the project's 2-core machine. Prints the
median of --runs runs of each command, measured in one run so the ratios compare.

    python benchmarks/cli_startup.py --runs 21
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


def median_ms(args: list[str], runs: int, env: dict[str, str], cwd: str) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    pfdb_cmd = [sys.executable, str(ROOT / "bin" / "pfdb")]
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{folder}/bench.db"}
        env.pop("PFDB_MIGRATIONS_DIR", None)
        subprocess.run([*pfdb_cmd, "init"], env=env, cwd=folder, check=True, stdout=subprocess.DEVNULL)
        cases = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("python -c 'import pfdb'", [sys.executable, "-c", "import pfdb"]),
            ("pfdb status --no-drift", [*pfdb_cmd, "status", "--no-drift"]),
            ("pfdb status", [*pfdb_cmd, "status"]),
            ("pfdb health", [*pfdb_cmd, "health"]),
        ]
        results = [(label, median_ms(cmd, args.runs, env, folder)) for label, cmd in cases]
    base = results[0][1]
    print(f"median of {args.runs} runs on {os.cpu_count()} cores (target: pfdb status <= 150 ms)")
    for label, ms in results:
        print(f"{label:28s} {ms:7.1f} ms  {ms / base:5.1f}x python -c pass")


if __name__ == "__main__":
    main()
