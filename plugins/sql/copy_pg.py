"""``sql.copy`` into PostgreSQL: the source streamed once, ``COPY`` into the target in batches.

The source is read by one statement (PostgreSQL: ``COPY (SELECT …) TO STDOUT``, its blocks
passed on unparsed; SQLite: ``fetchmany`` into ``write_row``), the same work as a bare pipe.
The target takes it in batches of ``batch_size`` rows, each its own ``COPY … FROM STDIN`` and
commit, so the step can stop between batches and a crash leaves whole batches. A batch goes
straight into the table; if one of its keys is there already (a re-run, or a wave copied
before), that batch is rolled back and sent again into a temp table (``ON COMMIT DELETE
ROWS``) then upserted (``INSERT … SELECT … ON CONFLICT DO UPDATE``), and so is every later
batch: re-running is safe.

A batch is kept in memory to be sent again only when the target held rows when the copy began
(into an empty target, the first copy, the rows pass through as in a bare pipe). A row that
another writer puts into an empty target during the copy with a key being copied fails the
step at that batch ("re-running the step is safe": the re-run upserts).
"""

from __future__ import annotations

import contextlib
from typing import Any

from .db import psycopg_module

STAGE = "rb_copy_stage"
FETCH = 10_000  # rows per fetchmany from SQLite (as the bare loop)


class Into:
    """The target side: a batch at a time, straight in or staged and upserted."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.dst = job.dst.raw
        self.names = ", ".join(c.q for c in job.tcols)
        self.upsert = job._upsert(f"SELECT {self.names} FROM {STAGE}")
        self.staged = False  # a key was there already: upsert from here on
        self.copy: Any = None
        self.cursor: Any = None
        self.dst.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} ON COMMIT DELETE ROWS AS "
            f"SELECT {self.names} FROM {job.target_table} WITH NO DATA"
        )
        held = self.dst.execute(f"SELECT 1 FROM {job.target_table} LIMIT 1").fetchone()
        self.dst.commit()
        # the batch's rows (SQLite) or COPY data (PostgreSQL), to send again if a key is met;
        # None: not kept (the target was empty, or every batch is staged now)
        self.buffer: Any = self._fresh() if held else None

    def _fresh(self) -> Any:
        return bytearray() if self.job.src.kind == "postgresql" else []

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
            if self.buffer is None:  # written into an empty target meanwhile: not kept
                raise
            self.dst.rollback()
            self.staged = True
            into = self._open(STAGE)
            if write == "write":
                into.write(self.buffer)
            else:
                for row in self.buffer:
                    into.write_row(row)
            self._close()
            self.dst.execute(self.upsert)
            self.dst.commit()
        if self.buffer is not None:
            self.buffer = None if self.staged else self._fresh()
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
    batch = job.batch if into.buffer is None else job.held_batch
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
                for block in out:  # one row per block (libpq's unit)
                    pipe.write(block)
                    if into.buffer is not None:
                        into.buffer += block
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
                if into.buffer is not None:
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
