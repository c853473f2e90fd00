"""`alexnet plot` and `alexnet filters`, and the pictures `alexnet export` adds to a version."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet.main import main as cli
from core import store
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.model import weight_layers
from training.pictures import curves_figure, filter_grid, load_conv1, read_metrics

# the fields README's "What a run writes" lists for metrics.jsonl that the curves draw
PLOTTED = ("train_loss", "val_loss", "train_top1_err", "val_top1_err", "val_top5_err", "lr")


def conv1_of(run: Path) -> np.ndarray:
    """conv1's weights, read through the network rather than the state_dict's key."""
    model = model_from_checkpoint(load_checkpoint(run / "checkpoint.pt"))
    return weight_layers(model)["conv1"].weight.detach().numpy()


def tile(grid: np.ndarray, i: int, *, columns: int, size: int, pad: int) -> np.ndarray:
    r, c = divmod(i, columns)
    y, x = pad + r * (size + pad), pad + c * (size + pad)
    return grid[y : y + size, x : x + size]


def test_filters_grid_has_one_tile_per_kernel(trained_run: Path, tmp_path: Path) -> None:
    weights = conv1_of(trained_run)
    count, channels, k, _ = weights.shape
    columns, scale, pad = 16, 3, 2
    out = tmp_path / "f.png"
    options = ["--columns", str(columns), "--scale", str(scale), "--pad", str(pad)]
    assert cli(["filters", str(trained_run / "checkpoint.pt"), "-o", str(out), *options]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.mode == "RGB" and channels == 3
        grid = np.asarray(img)
    rows = math.ceil(count / columns)
    size = k * scale
    assert grid.shape == (rows * size + (rows + 1) * pad, columns * size + (columns + 1) * pad, 3)
    # the padding is plain background; every tile is k x k blocks of scale x scale equal pixels
    assert (grid[:pad] == 255).all() and (grid[:, :pad] == 255).all()
    for i in range(count):
        t = tile(grid, i, columns=columns, size=size, pad=pad)
        blocks = t.reshape(k, scale, k, scale, 3)
        assert (blocks == blocks[:, :1, :, :1]).all(), f"kernel {i} is not upscaled by {scale}"


def test_each_tile_orders_its_pixels_like_its_kernels_weights(
    trained_run: Path, tmp_path: Path
) -> None:
    weights = conv1_of(trained_run)
    count, _, k, _ = weights.shape
    grid = np.asarray(filter_grid(weights, columns=12, scale=2, pad=1))
    for i in range(count):
        pixels = tile(grid, i, columns=12, size=2 * k, pad=1)[::2, ::2].astype(int)  # (k, k, 3)
        w = weights[i].transpose(1, 2, 0)  # (k, k, 3) like the picture
        # the largest weight is the brightest value, the smallest the darkest
        assert pixels.flat[w.argmax()] == pixels.max() == 255
        assert pixels.flat[w.argmin()] == pixels.min() == 0
        # larger weight, brighter (or equal) pixel, across the kernel's 3 x k x k values
        assert (np.diff(pixels.ravel()[np.argsort(w.ravel(), kind="stable")]) >= 0).all()


def test_a_constant_kernel_is_mid_grey_and_too_few_kernels_narrow_the_grid() -> None:
    weights = np.zeros((3, 3, 5, 5), np.float32)
    weights[1] = np.arange(75).reshape(3, 5, 5)
    grid = np.asarray(filter_grid(weights, columns=16, scale=1, pad=0))
    assert grid.shape == (5, 15, 3)  # one row of three kernels, not 16 columns
    assert set(np.unique(grid[:, :5])) == {128} and set(np.unique(grid[:, 10:])) == {128}


def test_store_model_kernels_draw_the_checkpoints_picture(
    exported: Path, trained_run: Path, tmp_path: Path
) -> None:
    ckpt = load_checkpoint(trained_run / "checkpoint.pt")
    # the exporter folds batch normalization into conv1: w * gamma / sqrt(var + eps)
    assert (ckpt["model"]["features.1.weight"] > 0).all(), "picture equal only for gamma > 0"
    from_ckpt = np.asarray(filter_grid(conv1_of(trained_run))).astype(int)
    by_name, origin = load_conv1("tiny", exported.parent.parent)
    assert "tiny:1" in origin
    by_folder, _ = load_conv1(exported)
    np.testing.assert_array_equal(by_name, by_folder)
    assert not np.allclose(by_name, conv1_of(trained_run)), "expected folded kernels"
    from_onnx = np.asarray(filter_grid(by_name)).astype(int)
    assert np.abs(from_onnx - from_ckpt).max() <= 1  # rounding of a rescaled kernel

    out = tmp_path / "store-filters.png"
    argv = ["filters", "tiny", "--store", str(exported.parent.parent), "-o", str(out)]
    assert cli(argv) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), from_onnx)


def test_filters_refuses_what_it_cannot_draw(
    exported: Path, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    store_dir = str(exported.parent.parent)
    for source, message in [
        ("nope", "no model 'nope'"),
        ("tiny:7", "no version 7"),
        (str(tmp_path), "without manifest.json"),
        (str(trained_run / "metrics.jsonl"), "is not a checkpoint"),
        ("bad/../name", "neither a file"),
    ]:
        out = tmp_path / "x.png"
        assert cli(["filters", source, "--store", store_dir, "-o", str(out)]) == 1, source
        err = capsys.readouterr().err
        assert message in err, (source, err)
        assert not out.exists()
    with pytest.raises(ValueError, match=r"\(K, 3, k, k\)"):
        filter_grid(np.zeros((4, 1, 5, 5)))
    with pytest.raises(ValueError, match="columns >= 1"):
        filter_grid(np.zeros((4, 3, 5, 5)), columns=0)


def test_plot_draws_every_metric_of_the_run(trained_run: Path, tmp_path: Path) -> None:
    lines = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    fig = curves_figure(read_metrics(trained_run))
    drawn = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    # a 4-class run has no top-5 error (null in metrics.jsonl): no line for it
    assert all(r["val_top5_err"] is None for r in lines)
    plotted = [f for f in PLOTTED if f != "val_top5_err"]
    assert set(drawn) == set(plotted)
    for field in plotted:
        percent = 100 if field.endswith("_err") else 1
        np.testing.assert_allclose(drawn[field].get_xdata(), [r["epoch"] for r in lines])
        np.testing.assert_allclose(drawn[field].get_ydata(), [percent * r[field] for r in lines])
    assert drawn["lr"].axes.get_yscale() == "log"

    sizes = []
    for dpi in (100, 50):
        out = tmp_path / f"curves-{dpi}.png"
        assert cli(["plot", str(trained_run), "-o", str(out), "--dpi", str(dpi)]) == 0
        with Image.open(out) as img:
            assert img.format == "PNG"
            img.load()
            sizes.append(img.size)
            # more than a blank canvas: the six lines bring colours
            assert len(img.convert("RGB").getcolors(1 << 20)) > 50
    assert sizes[0] == (2 * sizes[1][0], 2 * sizes[1][1])

    run_copy = tmp_path / "run"
    run_copy.mkdir()
    shutil.copy(trained_run / "metrics.jsonl", run_copy)
    assert cli(["plot", str(run_copy)]) == 0 and (run_copy / "curves.png").is_file()


def test_plot_refuses_missing_or_malformed_metrics(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert cli(["plot", str(tmp_path)]) == 1
    assert "no metrics file" in capsys.readouterr().err and not (tmp_path / "curves.png").exists()
    good = (trained_run / "metrics.jsonl").read_text().splitlines()
    bad = tmp_path / "metrics.jsonl"
    bad.write_text(good[0] + "\n{not json\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not JSON"):
        read_metrics(bad)
    row = json.loads(good[0])
    del row["val_top5_err"]
    bad.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"lacks the fields \['val_top5_err'\]"):
        read_metrics(tmp_path)
    bad.write_text("")
    with pytest.raises(ValueError, match="no epochs"):
        read_metrics(bad)


def test_export_lists_its_pictures_with_their_checksums(trained_run: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    argv = [
        "export",
        str(trained_run / "checkpoint.pt"),
        "--name",
        "pic",
        "--store",
        str(store_dir),
    ]
    assert cli(argv) == 0
    folder = store_dir / "pic" / "1"
    manifest = store.read_manifest(folder)
    assert set(manifest.pictures) == {"filters", "curves"}
    for entry in manifest.pictures.values():
        path = folder / entry.file
        assert entry.sha256 == store.sha256_file(path) and entry.bytes == path.stat().st_size
        with Image.open(path) as img:
            assert img.format == "PNG"
            img.load()
    # the version's filters.png is the checkpoint's kernels
    with Image.open(folder / manifest.pictures["filters"].file) as img:
        np.testing.assert_array_equal(
            np.asarray(img), np.asarray(filter_grid(conv1_of(trained_run)))
        )


def test_export_without_the_runs_metrics_has_no_curves(exported: Path) -> None:
    # the session's export was given no metrics file
    assert set(store.read_manifest(exported).pictures) == {"filters"}
    assert not (exported / "curves.png").exists()
