"""Records per second through ``SystemLogHandler`` beside a no-op handler, on SQLite (and PostgreSQL).

The no-op handler is the floor: what ``logging`` itself costs per record (formatting the
LogRecord, calling handlers). Each pfdb row is timed from the first ``log.info`` until the
last record is in the database (``close()`` flushes), so batching is measured, not hidden.

    python benchmarks/log_handler_benchmark.py --records 20000
    python benchmarks/log_handler_benchmark.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pfdb  # noqa: E402
from pfdb import SystemLog, migrations  # noqa: E402
from pfdb.log_handler import SystemLogHandler  # noqa: E402


class NoOpHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        pass


def rate(handler: logging.Handler, records: int) -> float:
    log = logging.getLogger(f"bench.{uuid.uuid4().hex}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    start = time.perf_counter()
    for i in range(records):
        log.info("order %d shipped", i, extra={"order": i})
    handler.close()
    elapsed = time.perf_counter() - start
    log.removeHandler(handler)
    return records / elapsed


def run(label: str, url: str, records: int) -> None:
    pfdb.init_database(url)
    migrations.migrate(backup=False)
    results = {"no-op handler": rate(NoOpHandler(), records)}
    for batch in (1, 10, 100, 500):
        n = records if batch > 1 else min(records, 2000)  # one commit per record is slow: fewer
        SystemLog.delete().execute()
        results[f"SystemLogHandler batch_size={batch}"] = rate(SystemLogHandler(batch_size=batch), n)
        assert SystemLog.select().count() == n, "records were lost"
    pfdb.close_database()
    print(f"\n{label}: {records} records")
    floor = results["no-op handler"]
    for name, value in results.items():
        print(f"  {name:<36} {value:>10,.0f} records/s  ({floor / value:5.1f}x the no-op cost)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--postgres", help="an admin URL; a scratch database is created and dropped")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run("SQLite (WAL, synchronous=NORMAL)", f"sqlite:///{folder}/bench.db", args.records)
    if args.postgres:
        import psycopg2

        name = f"pfdb_bench_{uuid.uuid4().hex[:8]}"
        admin = psycopg2.connect(args.postgres)
        admin.autocommit = True
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
        try:
            run("PostgreSQL", args.postgres.rsplit("/", 1)[0] + f"/{name}", args.records)
        finally:
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()


if __name__ == "__main__":
    main()
