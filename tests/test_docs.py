"""docs/contract.md against the code and a model exported in this session; the README's links
and example folders against the repository."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
CONTRACT = REPO / "docs" / "contract.md"
TICKED = re.compile(r"`([^`]+)`")


def section(title: str) -> str:
    """The text of the contract's section whose heading is `title`, up to the next heading
    of the same or a higher level."""
    text = CONTRACT.read_text()
    match = re.search(rf"^(#+) {re.escape(title)}\n", text, re.M)
    assert match, f"docs/contract.md has no section {title!r}"
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def first_table(title: str) -> list[list[str]]:
    """The rows (cells, stripped) of the first table in a section, without its header."""
    lines = section(title).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return block[2:]  # after the header and its |---| line


def first_column(title: str) -> list[str]:
    """The backticked names in the first column of a section's first table."""
    return [TICKED.match(row[0]).group(1) for row in first_table(title)]


def test_checkpoint_keys_are_the_trained_checkpoints(trained_run: Path) -> None:
    from training.checkpoint import load_checkpoint
    from training.model import VARIANTS

    ckpt = load_checkpoint(trained_run / "checkpoint.pt")
    assert sorted(first_column("Checkpoint (written by `alexnet train`)")) == sorted(ckpt)
    text = section("Checkpoint (written by `alexnet train`)")
    listed = re.search(r"`metrics.jsonl` \(one JSON object per epoch\): (.*?)\.\n", text, re.S)
    assert sorted(TICKED.findall(listed.group(1))) == sorted(ckpt["metrics"][-1])
    arch_row = next(r for r in first_table("Checkpoint (written by `alexnet train`)")
                    if r[0] == "`arch`")  # fmt: skip
    assert set(TICKED.findall(arch_row[1])) - {"training.model.build_model(arch, num_classes)"} == (
        set(VARIANTS)
    )


def test_the_file_table_names_every_store_file() -> None:
    from core import constants as C

    want = {*C.MODEL_FILES.values(), *C.PICTURE_FILES.values(), C.MANIFEST_FILE}
    assert set(first_column("Exported model (written by `alexnet export`)")) == want


def test_manifest_fields_are_the_stores_model(exported: Path) -> None:
    from core import store

    listed = first_column("`manifest.json`")
    assert sorted(listed) == sorted(store.Manifest.model_fields)
    written = json.loads((exported / "manifest.json").read_text())
    assert sorted(written) == sorted(listed)  # and an exported manifest has exactly these


def test_onnx_input_and_outputs_are_the_exported_models(exported: Path) -> None:
    import onnxruntime as ort

    from core import store

    manifest = store.read_manifest(exported)
    session = ort.InferenceSession(str(exported / "model.onnx"),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    got = {t.name: ("input", t.type, t.shape) for t in session.get_inputs()}
    got |= {t.name: ("output", t.type, t.shape) for t in session.get_outputs()}
    rows = first_table("The ONNX graph")
    assert sorted(TICKED.match(r[0]).group(1) for r in rows) == sorted(got)
    for name_cell, direction, dtype, shape, _ in rows:
        name = TICKED.match(name_cell).group(1)
        kind, onnx_type, onnx_shape = got[name]
        assert (
            direction == kind and onnx_type == f"tensor({'float' if dtype == 'float32' else dtype})"
        )
        dims = [d.strip() for d in shape.strip("[]").split(",")]
        assert len(dims) == len(onnx_shape), name
        for doc_dim, dim in zip(dims, onnx_shape, strict=True):
            if doc_dim == "N":
                assert not isinstance(dim, int), f"{name}: the batch dimension must be dynamic"
            elif doc_dim == "K":
                assert dim == manifest.num_classes == len(manifest.labels)
            else:
                assert dim == int(doc_dim), name


def test_every_route_the_service_serves_is_listed() -> None:
    from starlette.routing import Mount

    from service.app import create_app
    from service.config import Settings
    from service.routers import page

    app = create_app(Settings(store="/nonexistent"))
    schema = app.openapi()
    served = {f"{method.upper()} {path}" for path, ops in schema["paths"].items() for method in ops}
    listed = {
        TICKED.match(row[0]).group(1) for row in first_table("HTTP API (served by `alexnet serve`)")
    }
    assert listed == served
    outside = section("HTTP API (served by `alexnet serve`)")
    outside = outside[outside.index("Outside the schema") :].split("\n\n")[0]
    named = set(TICKED.findall(outside))
    top_level = {r.path + ("/{path}" if isinstance(r, Mount) else "")
                 for r in app.routes if hasattr(r, "path")}  # fmt: skip
    assert named == (top_level | {r.path for r in page.router.routes}) - set(schema["paths"])
    # the error codes: those the schema declares
    codes = {int(c) for ops in schema["paths"].values() for op in ops.values()
             for c in op["responses"] if int(c) >= 400}  # fmt: skip
    assert {int(row[0]) for row in first_table("Errors")} == codes


def test_the_accepted_formats_are_the_services() -> None:
    from core.constants import ACCEPTED_FORMATS

    row = next(r for r in first_table("Errors") if r[0] == "415")
    listed = re.search(r"the accepted: ([A-Z, ]+)\)", row[1]).group(1)
    assert listed.split(", ") == sorted(ACCEPTED_FORMATS)


def test_readme_links_stay_inside_the_repository() -> None:
    """Every relative link or path the README gives to a file names one in the repository
    (the contract is docs/contract.md, not a file beside the checkout)."""
    text = (REPO / "README.md").read_text()
    assert "docs/contract.md" in text
    targets = re.findall(r"\]\(([^)#\s]+)", text) + re.findall(r"`(\.\./[^`]+)`", text)
    outside = [
        t for t in targets if "://" not in t and not (REPO / t).resolve().is_relative_to(REPO)
    ]
    assert outside == []
    missing = [t for t in targets if "://" not in t and not (REPO / t).exists()]
    assert missing == []


def test_the_readmes_example_gallery_folders_are_ignored(tmp_path: Path) -> None:
    """The gallery folders the README's commands create in the checkout are not offered to
    `git add` (`.gitignore`)."""
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    text = (REPO / "README.md").read_text()
    end = r"(?=[\s`'\"]|$)"  # a whole value: not the scheme of a postgresql:// URL
    folders = set(re.findall(rf"ALEXNET_GALLERY=([\w./-]+){end}", text, re.M))
    folders |= set(re.findall(rf"--gallery ([\w./-]+){end}", text, re.M))
    folders = {f for f in folders if not f.startswith(("/", "$")) and f.upper() != f}
    assert "gallery" in folders
    for folder in sorted(folders):
        probe = f"{folder.rstrip('/')}/gallery.sqlite3"
        result = subprocess.run([git, "check-ignore", "-q", probe], cwd=REPO)
        assert result.returncode == 0, f"{probe} (from the README) is not ignored"
    # and the service's own package of the same name is not
    assert subprocess.run([git, "check-ignore", "-q", "service/gallery/items.py"],
                          cwd=REPO).returncode == 1  # fmt: skip
