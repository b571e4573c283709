"""Reading ahead: on PostgreSQL the next batch is cleaned in a thread while this one is written."""

from __future__ import annotations

import io
import sys
import threading

import pytest
from feeds_samples import write

import pfdb
from pfdb.feeds import import_products, importer
from pfdb.feeds.pipeline import read_ahead
from pfdb.models import Product


def test_items_arrive_in_order_from_another_thread():
    threads = set()

    def produce():
        for i in range(50):
            threads.add(threading.current_thread())
            yield i

    with read_ahead(produce()) as items:
        assert list(items) == list(range(50))
    assert threads and threading.current_thread() not in threads


def test_an_error_while_reading_arrives_after_the_items_before_it():
    def produce():
        yield 1
        yield 2
        raise ValueError("line 3 is broken")

    seen = []
    with pytest.raises(ValueError, match="line 3 is broken"), read_ahead(produce()) as items:
        for item in items:
            seen.append(item)
    assert seen == [1, 2]


def test_leaving_early_stops_the_reader_and_closes_its_source():
    state = {"produced": 0, "closed": False}

    def produce():
        try:
            while True:
                state["produced"] += 1
                yield state["produced"]
        finally:
            state["closed"] = True

    with pytest.raises(RuntimeError), read_ahead(produce(), depth=2) as items:
        for item in items:
            if item == 3:
                raise RuntimeError("the database went away")
    assert state["closed"]
    assert state["produced"] <= 3 + 2 + 1  # never more than depth ahead, plus the one in hand


@pytest.fixture
def counted(monkeypatch):
    used = []
    monkeypatch.setattr(importer, "read_ahead", lambda items: used.append(1) or read_ahead(items))
    return used


def test_a_file_on_postgresql_is_read_ahead_and_rejects_on_both_sides_all_count(postgres_url, tmp_path, counted):
    pfdb.init_database(postgres_url)
    # Bad prices are rejected by the reader; a new product without a name by the writer.
    lines = ["sku,name,price"] + [
        f"S-{i},{'' if i % 11 == 0 else f'Item {i}'},{'x' if i % 7 == 0 else i}" for i in range(500)
    ]
    result = import_products(write(tmp_path, "feed.csv", "\n".join(lines) + "\n"), batch_size=20)
    bad = {i for i in range(500) if i % 7 == 0 or i % 11 == 0}
    assert counted == [1]
    assert (result.rows, result.rejected, result.created) == (500, len(bad), 500 - len(bad))
    assert Product.select().count() == 500 - len(bad)


def test_sqlite_and_standard_input_are_read_inline(db, backend, tmp_path, counted, monkeypatch):
    import_products(write(tmp_path, "feed.csv", "sku,name,price\nA,Apple,1.00\n"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"sku,name,price\nB,Banana,2.00\n")))
    assert import_products("-").created == 1
    assert counted == ([1] if backend == "postgresql" else [])
