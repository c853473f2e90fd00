"""A real nginx in front of loopback servers, with the deployment's own load-balancer config.

    with Nginx(tmp / "lb", ["127.0.0.1:8001", "127.0.0.1:8002"]) as lb:
        httpx.get(lb.url + "/health/live")     # through nginx to one of the two
        lb.access_log.read_text()              # one line a request: upstream=..., request_id=...

The config is deploy/nginx/alexnet.conf.template, the file docker-compose.yml mounts into the
nginx image, rendered here as the image renders it (envsubst of LB_LISTEN and LB_UPSTREAM) with
one `server` line a replica, and included in a minimal nginx.conf whose pid file, logs and temp
folders all lie in `folder`. nginx runs in the foreground as a child process (Debian's
/usr/sbin/nginx; `.ci/run` installs it) and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from alexnet.local_server import free_port

REPO = Path(__file__).parents[1]
TEMPLATE = REPO / "deploy" / "nginx" / "alexnet.conf.template"
VARIABLE = re.compile(r"\$\{(\w+)\}")
# how long nginx leaves a failed upstream server alone (the template's fail_timeout)
FAIL_TIMEOUT_S = int(re.search(r"\bfail_timeout=(\d+)s\b", TEMPLATE.read_text())[1])


def nginx_binary() -> str | None:
    """The nginx executable (PATH, then Debian's /usr/sbin, which a user's PATH may lack)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def render(template: str, listen: str, upstreams: list[str]) -> str:
    """The template as the nginx image's envsubst renders it, with LB_LISTEN=`listen`, and its
    `server ${LB_UPSTREAM} ...` line once for each of `upstreams` (compose has one line whose
    name docker's DNS answers with every replica). Other ${NAME}s are an error; nginx's own
    $variables are left alone."""
    if not upstreams:
        raise ValueError("no upstream server")
    lines = []
    for line in template.splitlines():
        if "${LB_UPSTREAM}" in line and not line.lstrip().startswith("#"):
            lines += [line.replace("${LB_UPSTREAM}", upstream) for upstream in upstreams]
        else:
            lines.append(line)
    text = "\n".join(lines).replace("${LB_LISTEN}", listen) + "\n"
    live = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    if leftover := VARIABLE.findall(live):
        raise ValueError(f"the template has variables the tests do not set: {leftover}")
    return text


def main_config(folder: Path, include: Path, workers: int) -> str:
    """A minimal nginx.conf: everything nginx writes lies in `folder`."""
    temp = folder / "temp"
    paths = "\n".join(
        f"    {kind}_temp_path {temp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # as root, nginx's workers would run as `nobody`, which cannot enter a private temp folder
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes {workers};\n"
        f"pid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} info;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"{paths}\n"
        f"    access_log {folder / 'default-access.log'};\n"
        f"    include {include};\n"
        "}\n"
    )


class Nginx:
    """nginx with the deployment's load-balancer config, in front of `upstreams` (host:port).

    Args:
        folder: where the config, pid file, logs and temp files go (created).
        upstreams: the servers behind it, "127.0.0.1:PORT" each.
        port: the port on 127.0.0.1 it listens on (default: a free one).
        template: the load-balancer config template.
        workers: nginx worker processes (two: the upstream state must be shared through the
            config's `zone`, as in production).
    """

    def __init__(
        self,
        folder: Path,
        upstreams: list[str],
        *,
        port: int | None = None,
        template: Path = TEMPLATE,
        workers: int = 2,
    ) -> None:
        self.folder = Path(folder)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstreams = list(upstreams)
        self.conf = self.folder / "nginx.conf"
        self.site = self.folder / "conf.d" / "alexnet.conf"
        self.access_log = self.folder / "access.log"  # the template logs to stdout
        self.error_log = self.folder / "error.log"
        self.process: subprocess.Popen | None = None
        (self.folder / "temp").mkdir(parents=True, exist_ok=True)
        self.site.parent.mkdir(exist_ok=True)
        self.site.write_text(render(template.read_text(), f"127.0.0.1:{self.port}", upstreams))
        self.conf.write_text(main_config(self.folder, self.site, workers))

    def command(self) -> list[str]:
        exe = nginx_binary()
        if exe is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx)")
        # -e: the error log from the very start (before the config is read)
        return [exe, "-p", str(self.folder), "-c", str(self.conf), "-e", str(self.error_log),
                "-g", "daemon off;"]  # fmt: skip

    def start(self, timeout: float = 15) -> None:
        """Start nginx and wait until it answers HTTP (any status: the upstreams may be down).

        Raises:
            RuntimeError: it exited or did not answer in time (its error log is included).
        """
        with open(self.access_log, "ab") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                            cwd=self.folder)  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited ({self.process.returncode}):\n{self.errors()}")
            with contextlib.suppress(httpx.TransportError):
                httpx.get(self.url + "/health/live", timeout=5)
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not answer within {timeout:.0f} s:\n{self.errors()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (SIGTERM); SIGKILL if it takes longer than 10 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def errors(self) -> str:
        """The end of the error log."""
        return self.error_log.read_text()[-3000:] if self.error_log.exists() else "(no error log)"

    def access_lines(self) -> list[str]:
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []

    def __enter__(self) -> Nginx:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
