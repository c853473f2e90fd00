"""deploy/nginx/alexnet.conf.template against the service's settings (no nginx needed; the
live checks are tests/service/test_load_balancer.py)."""

from __future__ import annotations

import re
import subprocess

import pytest

from service.config import Settings
from tests.nginx import TEMPLATE, main_config, nginx_binary, render

SIZE = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def directives(block: str | None = None) -> dict[str, list[str]]:
    """name -> arguments of each directive in the template, rendered for one upstream (in one
    block: `upstream`, `location`...), comments left out."""
    rendered = render(TEMPLATE.read_text(), "127.0.0.1:1", ["127.0.0.1:2"])
    text = "\n".join(line.split("#", 1)[0] for line in rendered.splitlines())
    if block is not None:
        start = re.search(rf"^\s*{block}\b[^{{;]*\{{", text, re.M).end()
        depth, end = 1, start
        while depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        text = text[start : end - 1]
    found: dict[str, list[str]] = {}
    for name, args in re.findall(r"^\s*(\w+)\s*([^;{]*);", text, re.M):
        found.setdefault(name, []).append(args.strip())
    return found


def seconds(value: str) -> int:
    return int(value.removesuffix("s"))


def test_upstream_keepalive_closes_before_the_service_does() -> None:
    upstream = directives("upstream")
    assert "least_conn" in upstream and "zone" in upstream  # one state for all workers
    assert int(upstream["keepalive"][0]) > 0
    assert seconds(upstream["keepalive_timeout"][0]) < Settings().keep_alive_s
    location = directives("location")
    # keepalive to an upstream needs HTTP/1.1 and no "Connection: close"
    assert location["proxy_http_version"] == ["1.1"]
    assert 'Connection ""' in location["proxy_set_header"]


def test_the_service_not_nginx_decides_the_body_size() -> None:
    (size,) = directives("server")["client_max_body_size"]
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", size.lower()).groups()
    assert int(number) * SIZE[unit] >= Settings().max_request_bytes
    assert directives("location")["proxy_request_buffering"] == ["off"]


def test_retries_and_the_passive_health_check() -> None:
    location = directives("location")
    (next_upstream,) = location["proxy_next_upstream"]
    # nginx's default for POST: no retry once sent (a gallery add applied once)
    assert next_upstream.split() == ["error", "timeout"]
    (server,) = directives("upstream")["server"]
    assert "max_fails=1" in server.split()
    assert any(re.fullmatch(r"fail_timeout=\d+s", p) for p in server.split())
    # a model request may wait behind a full queue: minutes, not nginx's 60 s default
    assert seconds(location["proxy_read_timeout"][0]) >= 120
    assert seconds(location["proxy_connect_timeout"][0]) <= 10
    assert "X-Request-ID $alexnet_request_id" in location["proxy_set_header"]


@pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed")
def test_the_rendered_config_passes_nginx_t(tmp_path) -> None:
    site = tmp_path / "alexnet.conf"
    site.write_text(render(TEMPLATE.read_text(), "127.0.0.1:1", ["127.0.0.1:2", "127.0.0.1:3"]))
    (tmp_path / "temp").mkdir()
    (tmp_path / "nginx.conf").write_text(main_config(tmp_path, site, workers=1))
    result = subprocess.run(
        [nginx_binary(), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
         "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_render_leaves_nginx_variables_and_refuses_unknown_ones() -> None:
    text = render(TEMPLATE.read_text(), "127.0.0.1:1", ["127.0.0.1:2", "127.0.0.1:3"])
    assert text.count("server 127.0.0.1:") == 2 and "$http_x_request_id" in text
    with pytest.raises(ValueError, match="OTHER"):
        render("listen ${LB_LISTEN}; server ${OTHER};", "1", ["2"])
