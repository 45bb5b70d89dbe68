"""Rating on a Dask cluster: the same kernel per partition, bundles per service (DESIGN.md §2, §9).

``bluerocktel rate --engine dask [--scheduler ADDRESS]`` rates exactly what the local engine
rates and writes the same files: :func:`rating_engine` gives
:func:`~bluerocktel.rating.pending.rate_pending` a function with the contract of
:func:`~bluerocktel.rating.kernel.rate_batch` (one rated row per CDR, in input order), which
for ``dask`` computes on the cluster. Everything around it (the pending selection, bundle usage
of earlier runs, the month's file, adjustments, audit) stays the local code. Without a scheduler
address a :class:`distributed.LocalCluster` of 2 single-threaded worker processes is started
for the run.

How :class:`DaskRater` rates a batch (a month's pending CDRs)
    1. The batch is cut into row ranges, scattered to the workers round robin, a few at a time
       (at most :data:`PARTITIONS_IN_FLIGHT_PER_WORKER` per worker wait in memory). The tariffs
       travel to every worker once per :class:`Tariffs` object (a broadcast scatter), not per
       partition, so the kernel's preparation of them is also done once per worker.
    2. Each worker prices its range with :func:`~bluerocktel.rating.kernel.price_batch` (pure
       per row) on its own DuckDB connection (:func:`bluerocktel.lake.connect_duckdb`).
    3. Bundle consumption depends on a service's other calls of the month, so the rows of
       services that hold a bundle are shuffled to ``service_id mod G`` groups (G <= the number
       of workers) and :func:`~bluerocktel.rating.bundles.apply_bundles` runs once per group
       with the earlier usage: all calls of a service meet in one group and consume the
       allowance in call order, as in one local call. Rows of the other services are finished
       where they were priced (``apply_bundles`` leaves them as they are).
    4. The client gathers the pieces and puts the rows back in input order.

The workers must import this package's version; the lake is read and written by the client.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bluerocktel.errors import UserFacingError
from bluerocktel.lake import connect_duckdb
from bluerocktel.rating.bundles import apply_bundles
from bluerocktel.rating.kernel import price_batch, rate_batch
from bluerocktel.rating.tariffs import Tariffs

ENGINES = ("local", "dask")
LOCAL_WORKERS = 2                       # LocalCluster size when no scheduler is given
MIN_PARTITION_ROWS = 100_000            # default CDRs per pricing task: at least (a kernel call has a fixed cost)
MAX_PARTITION_ROWS = 1_000_000          # and at most (memory)
PARTITIONS_IN_FLIGHT_PER_WORKER = 2     # row ranges scattered ahead of the workers
# no dashboard (it would import bokeh) and the scheduler's small HTTP server on a free local port
LOCAL_CLUSTER_QUIET = {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}

RateBatch = Callable[..., pa.Table]     # (con, cdrs, tariffs, rated_at, bundle_used=None) -> rated


class DaskEngineError(UserFacingError):
    """The Dask cluster cannot be used: its scheduler does not answer, has no worker, or the
    address is not one."""


@contextmanager
def rating_engine(engine: str = "local", scheduler: str | None = None, *, partition_rows: int | None = None,
                  connect_timeout_s: float | None = None) -> Iterator[RateBatch]:
    """The rating function of ``engine`` for the block: ``local`` gives
    :func:`~bluerocktel.rating.kernel.rate_batch` itself; ``dask`` a :class:`DaskRater` on the
    cluster whose scheduler is at ``scheduler`` (or on a LocalCluster started for the block; see
    :func:`dask_client`). Both return the same rows for the same arguments. Raises
    :class:`~bluerocktel.errors.UserFacingError` for an unknown engine or a scheduler given to
    the local engine, :class:`DaskEngineError` when the cluster cannot be used.
    """
    if engine not in ENGINES:
        raise UserFacingError(f"unknown rating engine {engine!r} (--engine): expected one of {', '.join(ENGINES)}")
    if engine == "local":
        if scheduler is not None:
            raise UserFacingError(f"a Dask scheduler ({scheduler!r}, --scheduler) needs --engine dask")
        yield rate_batch
        return
    with dask_client(scheduler, connect_timeout_s=connect_timeout_s) as client:
        # a LocalCluster has one single-threaded worker per core: one DuckDB thread each (with
        # DuckDB's default, a thread per core in each worker, 2M CDRs took 16.5 s instead of 11.5 s)
        yield DaskRater(client, partition_rows=partition_rows, duckdb_threads=1 if scheduler is None else None)


@contextmanager
def dask_client(scheduler: str | None, *, connect_timeout_s: float | None = None) -> Iterator[object]:
    """A ``distributed.Client`` of the scheduler at ``scheduler`` (``tcp://host:port``), or of a
    LocalCluster of :data:`LOCAL_WORKERS` single-threaded processes started for the block when
    ``scheduler`` is None. Raises :class:`DaskEngineError` when the scheduler cannot be reached,
    or has no worker, within ``connect_timeout_s`` (default: Dask's
    ``distributed.comm.timeouts.connect`` setting, 30 s unless configured)."""
    import dask.config
    from dask.utils import parse_timedelta
    from distributed import Client, LocalCluster

    if scheduler is None:
        with LocalCluster(n_workers=LOCAL_WORKERS, threads_per_worker=1, processes=True, **LOCAL_CLUSTER_QUIET) \
                as cluster, Client(cluster) as client:
            yield client
        return
    if connect_timeout_s is None:
        connect_timeout_s = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
    try:
        client = Client(scheduler, timeout=connect_timeout_s)
    except (OSError, ValueError, TypeError) as exc:   # timeouts are OSError; a bad address ValueError
        raise DaskEngineError(f"cannot use the Dask scheduler {scheduler!r} (--scheduler): {exc}") from exc
    try:
        try:
            client.wait_for_workers(1, timeout=connect_timeout_s)
        except TimeoutError as exc:
            raise DaskEngineError(f"the Dask scheduler {scheduler!r} (--scheduler) has no worker "
                                  f"after {connect_timeout_s} s") from exc
        yield client
    finally:
        client.close()


class DaskRater:
    """:func:`~bluerocktel.rating.kernel.rate_batch` computed on the Dask cluster of ``client``.

    Call it as ``rate_batch``: ``rater(con, cdrs, tariffs, rated_at, bundle_used=None)`` returns
    the same table (:data:`~bluerocktel.lake.RATED_SCHEMA`, one row per CDR in input order);
    ``con`` is not used (each worker has its own connection). ``partition_rows``: CDRs per
    pricing task (default: two tasks per worker, within :data:`MIN_PARTITION_ROWS` ..
    :data:`MAX_PARTITION_ROWS` rows each). ``duckdb_threads``: threads of the workers' DuckDB
    (default: DuckDB's own, one per core of the worker's machine). One caller at a time.
    """

    def __init__(self, client, *, partition_rows: int | None = None, duckdb_threads: int | None = None):
        if partition_rows is not None and partition_rows < 1:
            raise ValueError(f"partition_rows must be >= 1, got {partition_rows}")
        self.client = client
        self.partition_rows = partition_rows
        self.duckdb_threads = duckdb_threads
        self._tariffs: tuple[Tariffs, object] | None = None    # (tariffs, its future on every worker)

    def __call__(self, con, cdrs: pa.Table, tariffs: Tariffs, rated_at: dt.datetime,
                 bundle_used: pa.Table | None = None) -> pa.Table:
        if rated_at.tzinfo is None:
            raise ValueError(f"naive datetime {rated_at!r}: rated_at must be UTC-aware")
        rows = cdrs.num_rows
        if rows == 0:
            return rate_batch(con, cdrs, tariffs, rated_at, bundle_used)
        client = self.client
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise DaskEngineError("the Dask cluster has no worker left")
        on_workers = self._scattered(tariffs)
        used = None if bundle_used is None else client.scatter(bundle_used, broadcast=True, hash=False)
        size = self.partition_rows or min(max(math.ceil(rows / (2 * len(workers))), MIN_PARTITION_ROWS),
                                          MAX_PARTITION_ROWS)
        services = _bundle_services(tariffs)
        groups = min(len(workers), len(services))

        from distributed import wait

        priced, in_flight = [], []        # priced: (future, worker holding its input)
        for number, start in enumerate(range(0, rows, size)):
            if len(in_flight) >= PARTITIONS_IN_FLIGHT_PER_WORKER * len(workers):   # bound what waits in memory
                in_flight = list(wait(in_flight, return_when="FIRST_COMPLETED").not_done)
            # one range per call, round robin: a scatter of one item would always go to the same worker
            worker = workers[number % len(workers)]
            [part] = client.scatter([cdrs.slice(start, size)], workers=[worker], hash=False)
            future = client.submit(_price_partition, part, start, on_workers, rated_at, used, groups,
                                   self.duckdb_threads, workers=[worker], allow_other_workers=True, pure=False)
            priced.append((future, worker))
            in_flight.append(future)

        def item(k: int) -> list:
            """Item ``k`` of each priced partition, taken where it is (else the scheduler may move
            whole partitions to take a piece: measured 1.8 s for 500k rows)."""
            return [client.submit(operator.getitem, f, k, workers=[w], allow_other_workers=True, pure=False)
                    for f, w in priced]

        # item 0 of a priced partition: its finished rows; item 1 + g: its rows of service group g
        pieces = item(0)
        for group in range(groups):
            moved = item(1 + group)
            pieces.append(client.submit(_finish_group, on_workers, used, self.duckdb_threads, *moved, pure=False))
        priced.clear()   # drop our references to the partitions before gathering
        del in_flight
        rated = pa.concat_tables(client.gather(pieces))
        if groups:    # rows back in input order: row i has rid i (without groups they are in order)
            order = np.empty(rows, dtype=np.int64)
            order[rated["rid"].to_numpy()] = np.arange(rows, dtype=np.int64)
            rated = rated.take(order)
        return rated.drop_columns(["rid"])

    def _scattered(self, tariffs: Tariffs):
        """``tariffs`` on every worker, sent once per Tariffs object."""
        if self._tariffs is None or self._tariffs[0] is not tariffs:
            self._tariffs = (tariffs, self.client.scatter(tariffs, broadcast=True, hash=False))
        return self._tariffs[1]


def _bundle_services(tariffs: Tariffs) -> pa.Array:
    """The services that hold at least one bundle (their calls need one :func:`apply_bundles`)."""
    return pc.unique(tariffs.bundles["service_id"].combine_chunks().drop_null())


def _with_rid(table: pa.Table, rid: np.ndarray) -> pa.Table:
    return table.append_column("rid", pa.array(rid, pa.int64()))


def _connect(threads: int | None):
    """This worker's DuckDB connection, its database set to ``threads`` threads when given."""
    con = connect_duckdb()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def _price_partition(part: pa.Table, start: int, tariffs: Tariffs, rated_at: dt.datetime, used: pa.Table | None,
                     groups: int, threads: int | None) -> tuple[pa.Table, ...]:
    """On a worker: price the CDRs ``part`` (rows ``start``.. of the batch), finish the rows of
    services without bundles and split the others by ``service_id mod groups``. Returns
    ``(finished rows, rows of group 0, ..., rows of group groups-1)``, each with its batch row
    number ``rid`` as the last column."""
    con = _connect(threads)
    try:
        priced = price_batch(con, part, tariffs, rated_at)
        rid = np.arange(start, start + part.num_rows, dtype=np.int64)
        if groups == 0:
            return (_with_rid(apply_bundles(con, priced, tariffs, used), rid),)
        moving = pc.fill_null(pc.is_in(priced["service_id"], value_set=_bundle_services(tariffs)), False)
        moving = moving.combine_chunks().to_numpy(zero_copy_only=False)
        finished = _with_rid(apply_bundles(con, priced.filter(pa.array(~moving)), tariffs, used), rid[~moving])
    finally:
        con.close()
    moved = _with_rid(priced.filter(pa.array(moving)), rid[moving])
    group_of = moved["service_id"].to_numpy() % groups
    return (finished, *(moved.filter(pa.array(group_of == g)) for g in range(groups)))


def _finish_group(tariffs: Tariffs, used: pa.Table | None, threads: int | None, *pieces: pa.Table) -> pa.Table:
    """On a worker: the priced rows of one service group from every partition of the batch (so
    every call of these services): apply their bundles, in one call as locally."""
    moved = pa.concat_tables(pieces)
    con = _connect(threads)
    try:
        return _with_rid(apply_bundles(con, moved.drop_columns(["rid"]), tariffs, used), moved["rid"].to_numpy())
    finally:
        con.close()
