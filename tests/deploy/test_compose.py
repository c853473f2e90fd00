"""docker-compose.yml: valid against the compose specification, and what each service needs.

The schema is the compose specification's JSON schema that check-jsonschema ships
(`--builtin-schema vendor.compose-spec`, with its licence), so this runs offline and
without a Docker engine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).parents[2]
COMPOSE = REPO / "docker-compose.yml"


def validate(path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert exe, "check-jsonschema not installed (dev extra)"
    return subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True)  # fmt: skip


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    result = validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    # the validator does reject what the specification forbids
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["api"]["deploy"]["resources"]["reservations"]["devices"] = "nvidia"
    broken["services"]["api"]["restart"] = {"policy": "always"}
    (tmp_path / "compose.yml").write_text(yaml.safe_dump(broken))
    assert validate(tmp_path / "compose.yml").returncode != 0


def gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_api_reserves_an_nvidia_gpu_and_keeps_store_and_gallery_in_volumes(
    services: dict,
) -> None:
    api = services["api"]
    assert api["build"]["target"] == "serve" and "profiles" not in api
    (device,) = gpu_devices(api)
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert api["environment"]["ALEXNET_DEVICE"] == "cuda"
    mounts = {v.split(":")[1]: v for v in api["volumes"]}
    # the image's settings point at these two folders
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ALEXNET_STORE=/data/model_store" in dockerfile
    assert "ALEXNET_GALLERY=/data/gallery" in dockerfile
    assert set(mounts) == {"/data/model_store", "/data/gallery"}
    assert mounts["/data/model_store"].endswith(":ro")  # the service only reads the store
    assert mounts["/data/gallery"].split(":")[0] in yaml.safe_load(COMPOSE.read_text())["volumes"]
    assert api["restart"] in ("always", "unless-stopped", "on-failure")
    assert api["healthcheck"]["test"] == ["CMD", "python", "-m", "service.healthcheck"]
    assert all(k.startswith("ALEXNET_") for k in api["environment"])


def test_a_cpu_only_service_for_hosts_without_a_gpu(services: dict) -> None:
    cpu = services["api-cpu"]
    assert cpu["environment"]["ALEXNET_DEVICE"] == "cpu" and not gpu_devices(cpu)
    assert cpu["profiles"], "must not start beside `api` by default (same port)"
    assert cpu["volumes"] == services["api"]["volumes"]
    assert cpu["healthcheck"] == services["api"]["healthcheck"]
    assert "ALEXNET_THREADS" in cpu["environment"]


def test_trainer_is_a_profile_with_the_train_image_and_gpus(services: dict) -> None:
    trainer = services["trainer"]
    assert trainer["profiles"] == ["train"] and trainer["build"]["target"] == "train"
    assert gpu_devices(trainer)[0]["driver"] == "nvidia"
    targets = {v.split(":")[1] for v in trainer["volumes"]}
    assert "/work/model_store" in targets and "/work/runs" in targets


# ---------------------------------------------------------------- profile `scale`


def strings(node: object) -> list[str]:
    """Every string value (and key) in a parsed YAML tree: what compose interpolates."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in strings(k) + strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def test_no_required_variable_and_no_default_database_password() -> None:
    values = strings(yaml.safe_load(COMPOSE.read_text()))
    # compose resolves ${VAR:?...} for the whole file before it applies profiles: one in the
    # `scale` services would make `docker compose up api` fail without a database password
    assert not [v for v in values if re.search(r"\$\{\w+:?\?", v)]
    # the password comes from the environment only: no ${POSTGRES_PASSWORD:-something}
    uses = [m for v in values for m in re.findall(r"\$\{POSTGRES_PASSWORD([^}]*)\}", v)]
    assert uses == [":-"]


def test_scale_profile_postgres_with_pgvector_a_volume_and_a_health_check(services: dict) -> None:
    pg = services["postgres"]
    assert pg["profiles"] == ["scale"]
    assert pg["image"] == "pgvector/pgvector:pg18"
    assert "ports" not in pg  # only the replicas reach it
    env = pg["environment"]
    assert env["POSTGRES_PASSWORD"] is None  # taken from the host's environment, no default
    assert pg["command"][:2] == ["sh", "-c"]
    assert '[ -n "$$POSTGRES_PASSWORD" ] || {' in pg["command"][2]
    assert pg["command"][2].rstrip().endswith("exec docker-entrypoint.sh postgres")
    # PostgreSQL 18 images keep their data below /var/lib/postgresql (18/docker)
    (volume,) = pg["volumes"]
    name, target = volume.split(":")
    assert (
        target == "/var/lib/postgresql" and name in yaml.safe_load(COMPOSE.read_text())["volumes"]
    )
    check = pg["healthcheck"]["test"]
    assert check[:2] == ["CMD", "pg_isready"]
    assert check[check.index("-U") + 1] == env["POSTGRES_USER"]
    assert check[check.index("-d") + 1] == env["POSTGRES_DB"]
    assert check[check.index("-h") + 1] == "127.0.0.1"  # not the init-time socket-only server


def test_scale_profile_replicas_share_the_database_and_publish_no_port(services: dict) -> None:
    replica, pg = services["api-replica"], services["postgres"]
    assert replica["profiles"] == ["scale"]
    assert "ports" not in replica  # N of them: `--scale` with a fixed host port would clash
    assert "container_name" not in replica
    assert replica["build"] == services["api"]["build"]
    assert replica["healthcheck"] == services["api"]["healthcheck"]
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = replica["environment"]
    assert env["ALEXNET_DEVICE"] == "cpu" and not gpu_devices(replica)
    assert env["ALEXNET_THREADS"] == replica["cpus"]
    url = urlsplit(env["ALEXNET_GALLERY"])
    assert url.scheme == "postgresql" and (url.hostname, url.port) == ("postgres", 5432)
    assert url.username == pg["environment"]["POSTGRES_USER"]
    assert url.password == "${POSTGRES_PASSWORD:-}"
    assert url.path == "/" + pg["environment"]["POSTGRES_DB"]
    # the model store only: the gallery is the database
    assert replica["volumes"] == ["./model_store:/data/model_store:ro"]
    assert all(k.startswith("ALEXNET_") for k in env)


def test_scale_profile_nginx_runs_the_tests_template_in_front_of_the_replicas(
    services: dict,
) -> None:
    from tests.nginx import TEMPLATE, render

    lb = services["lb"]
    assert lb["profiles"] == ["scale"]
    image, version = lb["image"].split(":")
    assert image == "nginx"
    # `resolve` in an upstream's server line needs nginx 1.27.3 or later
    assert tuple(int(x) for x in re.match(r"[\d.]+", version)[0].split(".")) >= (1, 27, 3)
    # the very file tests/nginx.py renders, where the image's envsubst looks for templates
    (mount,) = lb["volumes"]
    source, target, mode = mount.split(":")
    assert (REPO / source).resolve() == TEMPLATE and mode == "ro"
    assert target.startswith("/etc/nginx/templates/") and target.endswith(".conf.template")
    env = lb["environment"]
    assert set(re.findall(r"\$\{(\w+)\}", TEMPLATE.read_text())) == set(env)
    # upstream: every replica of the api-replica service, on the port the image serves on
    host_port, *parameters = env["LB_UPSTREAM"].split()
    host, port = host_port.split(":")
    assert host == "api-replica" and host in services and parameters == ["resolve"]
    assert f"ALEXNET_PORT={port}" in (REPO / "Dockerfile").read_text()
    assert "ALEXNET_PORT" not in services["api-replica"]["environment"]
    # published like `api`, on another default port (both may run), to the port nginx listens on
    (published,) = lb["ports"]
    assert published.startswith("${ALEXNET_LB_PUBLISH:-127.0.0.1:8080}:")
    assert published.rsplit(":", 1)[1] == env["LB_LISTEN"]
    assert "8080" not in services["api"]["ports"][0]
    assert lb["depends_on"]["api-replica"]["condition"] == "service_healthy"
    rendered = render(TEMPLATE.read_text(), env["LB_LISTEN"], [env["LB_UPSTREAM"]])
    assert "server api-replica:8000 resolve max_fails=" in rendered
    assert f"listen {env['LB_LISTEN']};" in rendered
