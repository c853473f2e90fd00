"""Tests for the procedural synthetic data set generator (training/synth.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from training import synth
from training.synth import CLASS_NAMES, generate

FILE_RE = re.compile(r"^(?P<cls>[a-z]+)_(?P<idx>\d{5})\.(?P<ext>jpg|png)$")


def _files(root: Path) -> dict[str, bytes]:
    """All files under ``root`` as {relative posix path: bytes}."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- class list


def test_class_names_are_many_distinct_and_all_drawable() -> None:
    assert len(CLASS_NAMES) >= 24
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    assert set(CLASS_NAMES) == set(synth.SHAPE_NAMES) | set(synth.PATTERN_NAMES)
    for i, name in enumerate(CLASS_NAMES):
        assert FILE_RE.match(f"{name}_00000.png"), name
        img = synth.draw_image(name, np.random.default_rng([0, i, 0]))
        assert img.mode == "RGB"
        assert 120 <= min(img.size) and max(img.size) <= 480


def test_draw_image_rejects_unknown_class() -> None:
    with pytest.raises(KeyError, match="unknown class"):
        synth.draw_image("banana", np.random.default_rng(0))


# --------------------------------------------------------------------------- layout


def test_layout_counts_and_files(tmp_path: Path) -> None:
    summary = generate(tmp_path, classes=4, per_class=10, seed=1, progress=False)
    assert summary["root"] == str(tmp_path)
    assert summary["classes"] == 4
    assert summary["class_names"] == list(CLASS_NAMES[:4])
    assert (summary["train"], summary["val"]) == (4 * 8, 4 * 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train", "val"]

    sizes, formats, indices = set(), set(), {}
    for split, expected in (("train", 8), ("val", 2)):
        assert sorted(p.name for p in (tmp_path / split).iterdir()) == sorted(CLASS_NAMES[:4])
        for name in CLASS_NAMES[:4]:
            files = sorted((tmp_path / split / name).iterdir())
            assert len(files) == expected
            for f in files:
                m = FILE_RE.match(f.name)
                assert m and m["cls"] == name, f.name
                indices.setdefault(name, []).append(int(m["idx"]))
                with Image.open(f) as img:
                    img.load()
                    assert img.format == {"jpg": "JPEG", "png": "PNG"}[m["ext"]]
                    formats.add(img.format)
                    sizes.add(img.size)
                    w, h = img.size
                    assert 120 <= w <= 480 and 120 <= h <= 480
                    assert 0.55 <= w / h <= 1.8
                    assert img.convert("RGB").size == img.size
    # every index 0..9 used exactly once per class; val holds the last ones
    for name, idx in indices.items():
        assert sorted(idx) == list(range(10)), name
    assert formats == {"JPEG", "PNG"}
    assert len(sizes) >= 20, "image sizes should vary"
    assert len({w > h for w, h in sizes}) == 2, "expected both portrait and landscape images"
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")], "temp files left"


@pytest.mark.parametrize(
    ("per_class", "val_fraction", "n_val"),
    [(2, 0.2, 1), (3, 0.1, 1), (10, 0.3, 3), (4, 0.9, 3)],
)
def test_val_split_size(tmp_path: Path, per_class: int, val_fraction: float, n_val: int) -> None:
    summary = generate(
        tmp_path, classes=2, per_class=per_class, val_fraction=val_fraction, progress=False
    )
    assert summary["val"] == 2 * n_val
    assert summary["train"] == 2 * (per_class - n_val)
    for name in CLASS_NAMES[:2]:
        assert len(list((tmp_path / "val" / name).iterdir())) == n_val
        assert len(list((tmp_path / "train" / name).iterdir())) == per_class - n_val


def test_progress_bar_is_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate(tmp_path, classes=2, per_class=2, progress=True)
    assert "4/4" in capsys.readouterr().err


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", classes=3, per_class=6, seed=7, progress=False)
    generate(tmp_path / "b", classes=3, per_class=6, seed=7, progress=False)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 18
    assert a == b


def test_different_seed_gives_different_images(tmp_path: Path) -> None:
    generate(tmp_path / "a", classes=3, per_class=6, seed=7, progress=False)
    generate(tmp_path / "c", classes=3, per_class=6, seed=8, progress=False)
    a, c = _files(tmp_path / "a"), _files(tmp_path / "c")
    assert len(c) == 18
    common = a.keys() & c.keys()
    assert all(a[k] != c[k] for k in common)
    # content must differ, not just names: no file of one set appears in the other
    assert not set(a.values()) & set(c.values())


# --------------------------------------------------------------------------- refusal


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": 1, "per_class": 5}, rf"between 2 and {len(CLASS_NAMES)}"),
        ({"classes": len(CLASS_NAMES) + 1, "per_class": 5}, rf"between 2 and {len(CLASS_NAMES)}"),
        ({"classes": 2, "per_class": 1}, "per_class"),
        ({"classes": 2, "per_class": 5, "val_fraction": 0.0}, "val_fraction"),
        ({"classes": 2, "per_class": 5, "val_fraction": 1.0}, "val_fraction"),
        ({"classes": 2, "per_class": 5, "seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_and_write_nothing(tmp_path: Path, kwargs: dict, message: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        generate(out, progress=False, **kwargs)
    assert not out.exists()


def test_refuses_to_overwrite_non_empty_output(tmp_path: Path) -> None:
    generate(tmp_path, classes=2, per_class=3, seed=1, progress=False)
    before = _files(tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate(tmp_path, classes=2, per_class=3, seed=2, progress=False)
    assert _files(tmp_path) == before
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == mtimes


def test_refuses_when_only_val_is_non_empty(tmp_path: Path) -> None:
    (tmp_path / "val" / "x").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        generate(tmp_path, classes=2, per_class=3, progress=False)
    assert not (tmp_path / "train").exists()


def test_empty_existing_split_folders_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    summary = generate(tmp_path, classes=2, per_class=3, progress=False)
    assert summary["train"] + summary["val"] == 6


# --------------------------------------------------------------------------- learnability


def _edge_map(path: Path, size: int = 64) -> np.ndarray:
    """Grayscale edge map of the image, padded to a square (keeps shapes undistorted)."""
    with Image.open(path) as img:
        gray = img.convert("L")
    w, h = gray.size
    side = max(w, h)
    square = Image.new("L", (side, side), int(np.asarray(gray).mean()))
    square.paste(gray, ((side - w) // 2, (side - h) // 2))
    small = square.resize((size, size), Image.Resampling.BOX)
    edges = np.asarray(small.filter(ImageFilter.FIND_EDGES), dtype=np.float64)[1:-1, 1:-1]
    return edges / (edges.mean() + 1e-6)


def _shape_features(path: Path) -> np.ndarray:
    """Position-, rotation- and colour-invariant shape descriptor.

    The magnitude of the 2-D Fourier transform of the edge map does not depend on where
    the object is; its radial profile describes scale/texture frequency, and the
    magnitudes of the angular harmonics of its angular profile describe rotational
    symmetry (circle: none, triangle: 3-fold, star: 5-fold, stripes: 2-fold, ...)
    independently of the rotation angle.
    """
    edges = _edge_map(path)
    n = edges.shape[0]
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(edges)))
    yy, xx = np.mgrid[-(n // 2) : n - n // 2, -(n // 2) : n - n // 2]
    radius, theta = np.hypot(xx, yy), np.arctan2(yy, xx)
    keep = (radius > 1) & (radius < n // 2)
    rbin = np.clip((radius / (n / 16)).astype(int), 0, 7)[keep]
    radial = np.bincount(rbin, spectrum[keep], 8) / np.bincount(rbin, None, 8)
    abin = ((theta + np.pi) / (2 * np.pi) * 72).astype(int)[keep] % 72
    angular = np.bincount(abin, spectrum[keep], 72)
    harmonics = np.abs(np.fft.rfft(angular / angular.sum()))[1:13]
    return np.concatenate([np.log(radial), 10 * harmonics])


def _colour_features(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)


def _nearest_mean_accuracy(root: Path, names: list[str], feature) -> float:
    """Fit class means on train/, classify every val/ image by nearest standardised mean."""
    xs, ys, tests = [], [], []
    for label, name in enumerate(names):
        for p in sorted((root / "train" / name).iterdir()):
            xs.append(feature(p))
            ys.append(label)
        tests += [(feature(p), label) for p in sorted((root / "val" / name).iterdir())]
    x, y = np.array(xs), np.array(ys)
    means = np.stack([x[y == k].mean(axis=0) for k in range(len(names))])
    scale = x.std(axis=0) + 1e-6
    hits = [int(np.argmin((((f - means) / scale) ** 2).sum(axis=1))) == label for f, label in tests]
    assert len(hits) == 6 * len(names)
    return float(np.mean(hits))


@pytest.fixture(scope="module")
def six_classes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("synth6")
    summary = generate(root, classes=6, per_class=30, seed=0, progress=False)
    assert (summary["train"], summary["val"]) == (6 * 24, 6 * 6)
    return root, summary["class_names"]


def test_classes_are_separable_by_shape(six_classes: tuple[Path, list[str]]) -> None:
    root, names = six_classes
    accuracy = _nearest_mean_accuracy(root, names, _shape_features)
    # chance is 1/6; a generator whose classes did not differ in shape would sit near it
    assert accuracy >= 0.5, f"shape nearest-class-mean accuracy {accuracy:.2f}"


def test_colour_does_not_give_the_class_away(six_classes: tuple[Path, list[str]]) -> None:
    root, names = six_classes
    accuracy = _nearest_mean_accuracy(root, names, _colour_features)
    assert accuracy <= 0.4, f"mean-colour accuracy {accuracy:.2f} (chance 0.17)"


def test_every_file_converts_to_rgb_and_modes_vary(six_classes: tuple[Path, list[str]]) -> None:
    root, _ = six_classes
    modes = set()
    for path in root.rglob("*.*"):
        with Image.open(path) as img:
            modes.add(img.mode)
            rgb = img.convert("RGB")
            assert rgb.mode == "RGB" and rgb.size == img.size
    assert "RGB" in modes
    assert modes - {"RGB"}, "expected a few non-RGB images (L / RGBA / P)"
