"""``sql.copy`` into PostgreSQL: the source streamed once, ``COPY`` into the target in batches.

The source is read by one statement (PostgreSQL: ``COPY (SELECT …) TO STDOUT``, its blocks
passed on unparsed; SQLite: ``fetchmany`` into ``write_row``), the same work as a bare pipe.
The target takes it in batches of ``batch_size`` rows, each its own ``COPY … FROM STDIN`` and
commit, so the step can stop between batches and a crash leaves whole batches. A batch goes
straight into the table; if one of its keys is there already (a re-run, or a wave copied
before), that batch is rolled back and sent again into a temp table (``ON COMMIT DELETE
ROWS``) then upserted (``INSERT … SELECT … ON CONFLICT DO UPDATE``), and so is every later
batch: re-running is safe.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .db import psycopg_module

STAGE = "rb_copy_stage"
FETCH = 2_000  # rows per fetchmany from SQLite


class Into:
    """The target side: a batch at a time, straight in or staged and upserted."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.dst = job.dst.raw
        self.names = ", ".join(c.q for c in job.tcols)
        self.upsert = job._upsert(f"SELECT {self.names} FROM {STAGE}")
        self.staged = False  # a key was there already: upsert from here on
        self.buffer: list[Any] = []  # the batch's rows (or blocks), to send again if staged
        self.copy: Any = None
        self.cursor: Any = None
        self.dst.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} ON COMMIT DELETE ROWS AS "
            f"SELECT {self.names} FROM {job.target_table} WITH NO DATA"
        )
        self.dst.commit()

    def _open(self, table: str) -> Any:
        self.cursor = self.dst.cursor()
        self.copy = self.cursor.copy(f"COPY {table} ({self.names}) FROM STDIN")
        return self.copy.__enter__()

    def _close(self) -> None:
        copy, self.copy = self.copy, None
        if copy is not None:
            copy.__exit__(None, None, None)

    def begin(self) -> Any:
        return self._open(STAGE if self.staged else self.job.target_table)

    def end(self, rows: int, write: str) -> None:
        """The batch is complete: commit it (upserted from the stage when staged, or when a
        key was there already); count it."""
        psycopg = psycopg_module()
        try:
            self._close()
            if self.staged:
                self.dst.execute(self.upsert)
            self.dst.commit()
        except psycopg.errors.UniqueViolation:
            self.dst.rollback()
            self.staged = True
            into = self._open(STAGE)
            for item in self.buffer:
                getattr(into, write)(item)
            self._close()
            self.dst.execute(self.upsert)
            self.dst.commit()
        self.buffer = []
        self.job.copied += rows
        self.job.progress(self.job.copied)

    def abort(self) -> None:
        copy, self.copy = self.copy, None
        if copy is not None:
            with contextlib.suppress(Exception):  # the batch is rolled back below
                copy.__exit__(RuntimeError, RuntimeError("aborted"), None)
        self.job.dst.rollback()


def stream_into_pg(job: Any) -> None:
    into = Into(job)
    batch = job.batch
    names = ", ".join(c.q for c in job.cols)
    select = f"SELECT {names} FROM {job.read_from} WHERE {job.where_text()}"
    try:
        if job.src.kind == "postgresql":
            with (
                job.src.raw.cursor() as scur,
                scur.copy(f"COPY ({select}) TO STDOUT") as out,
            ):
                pipe = into.begin()
                n = 0
                for block in out:
                    pipe.write(block)
                    into.buffer.append(bytes(block))  # one row per block (libpq's unit)
                    n += 1
                    if n == batch:
                        into.end(n, "write")
                        job.check()
                        pipe, n = into.begin(), 0
                into.end(n, "write")
        else:
            cur = job.src.raw.execute(select)
            pipe = into.begin()
            n = 0
            while chunk := cur.fetchmany(min(FETCH, batch - n)):
                for row in chunk:
                    pipe.write_row(row)
                into.buffer += chunk
                n += len(chunk)
                if n >= batch:
                    into.end(n, "write_row")
                    job.check()
                    pipe, n = into.begin(), 0
            into.end(n, "write_row")
    except BaseException:
        into.abort()
        raise
    finally:
        job.src.rollback()
