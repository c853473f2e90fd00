"""Connections to the gallery's PostgreSQL: the pool, the vector types, and the errors of an
unreachable database turned into `GalleryUnavailableError`.

Every connection is in autocommit mode (writes open `conn.transaction()` themselves) and has
the pgvector type registered with fast numpy adapters: a vector parameter is a float32
ndarray, a vector column read in binary comes back as one. A connection is checked when it
is taken from the pool, so one that a server restart broke is replaced instead of used; a
connection that cannot be had within GETCONN_TIMEOUT seconds is an unavailable database,
not a wait. While the pool's last attempt to connect failed (`ConnectionHealth`) a request
waits only FAILING_TIMEOUT seconds - long enough to take a connection the pool has just
made again - and the error names the last connection failure. The pool gives up a
reconnection attempt after RECONNECT_TIMEOUT seconds and starts a fresh one at the next
request, so it is back within seconds of the server.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psycopg
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format
from psycopg.types import TypeInfo
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from service.gallery.items import GalleryUnavailableError

GETCONN_TIMEOUT = 3.0  # s: a request waits at most this long for a connection
FAILING_TIMEOUT = 0.5  # s: ... and this long while the last attempt to connect failed
PROBLEM_TIMEOUT = 2.0  # s: what /health/ready waits for its trivial query
CONNECT_TIMEOUT = 3  # s: libpq's connect_timeout (whole seconds, at least 2)
RECONNECT_TIMEOUT = 3.0  # s: a background reconnection gives up; the next request retries
POOL_MAX = 10
CONNECT_ARGS: dict[str, Any] = {
    "autocommit": True,
    "connect_timeout": CONNECT_TIMEOUT,
    "application_name": "alexnet-gallery",
    # a server that vanished without closing the socket is noticed within ~25 s
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
}  # fmt: skip
_HEADER = struct.Struct(">HH")


class VectorBinaryDumper(Dumper):
    """A float32 ndarray as pgvector's binary `vector` (2-byte dim, 2 unused, big-endian f4)."""

    format = Format.BINARY

    def dump(self, obj: np.ndarray) -> bytes:
        return _HEADER.pack(len(obj), 0) + obj.astype(">f4", copy=False).tobytes()


class VectorBinaryLoader(Loader):
    """pgvector's binary `vector` as a float32 ndarray."""

    format = Format.BINARY

    def load(self, data: Any) -> np.ndarray:
        return np.frombuffer(data, dtype=">f4", offset=_HEADER.size).astype(np.float32)


def register_vector(conn: psycopg.Connection) -> None:
    """Adapt numpy float32 arrays to and from `vector` on this connection (the `configure`
    of the pool's connections)."""
    info = TypeInfo.fetch(conn, "vector")
    if info is None:
        raise psycopg.ProgrammingError("the vector extension is not installed")
    info.register(conn)  # makes "vector" a type name for COPY's set_types
    dumper = type("NdarrayVectorDumper", (VectorBinaryDumper,), {"oid": info.oid})
    conn.adapters.register_dumper(np.ndarray, dumper)
    conn.adapters.register_loader(info.oid, VectorBinaryLoader)


class ConnectionHealth:
    """Whether the pool's last attempt to connect failed, and why (set by its connections'
    class, `make_pool`)."""

    def __init__(self) -> None:
        self.failure: str | None = None

    @property
    def timeout(self) -> float:
        """How long a request waits for a connection now."""
        return GETCONN_TIMEOUT if self.failure is None else FAILING_TIMEOUT


def make_pool(url: str, name: str) -> tuple[ConnectionPool, ConnectionHealth]:
    """An open pool on `url` with one connection made, and the health of its connection
    attempts. A pool timeout (no connection within GETCONN_TIMEOUT seconds) is raised to the
    caller, which maps it with `unavailable`."""
    health = ConnectionHealth()

    class GalleryConnection(psycopg.Connection):
        @classmethod
        def connect(cls, *args: Any, **kwargs: Any) -> GalleryConnection:
            try:
                conn = super().connect(*args, **kwargs)
            except psycopg.Error as e:
                health.failure = reason(e, url)
                raise
            health.failure = None
            return conn

    pool = ConnectionPool(
        url, connection_class=GalleryConnection, min_size=1, max_size=POOL_MAX, open=False,
        name=name, kwargs=CONNECT_ARGS, configure=register_vector,
        check=ConnectionPool.check_connection, timeout=GETCONN_TIMEOUT,
        reconnect_timeout=RECONNECT_TIMEOUT,
    )  # fmt: skip
    try:
        pool.open(wait=True, timeout=GETCONN_TIMEOUT)
    except BaseException:
        pool.close(timeout=0)
        raise
    return pool, health


def connect(url: str) -> psycopg.Connection:
    """One connection outside the pool (migrations at open, `stored_model`)."""
    return psycopg.connect(url, **CONNECT_ARGS)


@contextmanager
def unavailable(url: str, location: str, health: ConnectionHealth | None = None) -> Iterator[None]:
    """Turn the errors of a database that cannot be reached (refused, shut down, a pool
    timeout, a broken connection) into `GalleryUnavailableError` with a short reason that
    names `location` (the URL without its password) and never the password."""
    try:
        yield
    except PoolClosed:
        raise RuntimeError(f"gallery {location} is closed") from None
    except PoolTimeout:
        failure = health.failure if health is not None else None
        why = f"unreachable: {failure}" if failure else "no connection in time (pool busy?)"
        raise GalleryUnavailableError(f"gallery database {location} {why}") from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as e:
        raise GalleryUnavailableError(
            f"gallery database {location} unreachable: {reason(e, url)}"
        ) from None


def reason(error: BaseException, url: str) -> str:
    """The first line of a driver error, with the URL's password masked should it appear."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***")
    return text[:300]
