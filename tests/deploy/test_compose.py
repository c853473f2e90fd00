"""docker-compose.yml: valid against the compose specification, and what each service needs.

The schema is the compose specification's JSON schema that check-jsonschema ships
(`--builtin-schema vendor.compose-spec`, with its licence), so this runs offline and
without a Docker engine.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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
