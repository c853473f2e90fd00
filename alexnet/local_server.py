"""`alexnet serve` as a child process on a loopback port, until it is ready: the one way the
tests, the bench and scripts start a real server.

    with serve(store, gallery, api_key="k") as server:   # ALEXNET_API_KEY=k
        httpx.get(server.url + "/health/ready")
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

SERVE = [sys.executable, "-m", "alexnet", "serve"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running server: its base URL, its process and the file its output goes to."""

    url: str
    process: subprocess.Popen
    log: Path

    def rss_mib(self) -> float:
        """Resident memory of the server process, MiB (Linux: /proc/PID/status)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for process {self.process.pid}")


@contextlib.contextmanager
def serve(
    store: Path,
    gallery: str | Path,
    *,
    wait_ready: bool = True,
    port: int | None = None,
    command: list[str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    timeout: float = 120,
    **env: str,
) -> Iterator[Server]:
    """Start `alexnet serve` (or `command`) and wait until it answers; stop it on exit.

    Args:
        store, gallery: ALEXNET_STORE and ALEXNET_GALLERY (a folder or a postgresql:// URL).
        wait_ready: wait for /health/ready (model and gallery loaded), else /health/live.
        port: the port (default: a free one).
        command: what to run instead of `alexnet serve` (it reads the same variables).
        cwd: its working folder.
        log: where its output goes, appended to (default: server-PORT.log beside a gallery
            folder, or in the temporary folder).
        timeout: seconds to wait for it.
        env: further settings as ALEXNET_* variables: `max_queue="8"` is ALEXNET_MAX_QUEUE=8.

    Raises:
        RuntimeError: it exited or did not answer in time (the end of its log is included).
    """
    port = port or free_port()
    environ = {
        **os.environ,
        "ALEXNET_STORE": str(store),
        "ALEXNET_GALLERY": str(gallery),
        "ALEXNET_PORT": str(port),
        "ALEXNET_HOST": "127.0.0.1",
        **{f"ALEXNET_{k.upper()}": v for k, v in env.items()},
    }
    if log is None:  # beside a gallery folder; for a database gallery in the temporary folder
        folder = Path(tempfile.gettempdir()) if "://" in str(gallery) else Path(gallery).parent
        log = folder / f"server-{port}.log"
    with open(log, "ab") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(command or SERVE, env=environ, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        path = "/health/ready" if wait_ready else "/health/live"
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({log}):\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + path, timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer {path} within {timeout:.0f} s "
                                   f"({log}):\n{log.read_text()[-3000:]}")  # fmt: skip
            time.sleep(0.2)
        yield Server(url, proc, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
