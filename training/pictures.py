"""Pictures of a model for people: training curves and the conv1 kernels (the paper's Figure 3).

    alexnet plot runs/synth-bn                    # -> runs/synth-bn/curves.png
    alexnet filters runs/synth-bn/best.pt         # -> runs/synth-bn/filters.png
    alexnet filters synth:1 -o synth-filters.png  # from a store model's model.onnx

`alexnet export` writes both into the new store version (`filters.png`, and `curves.png`
when the checkpoint's folder holds the run's `metrics.jsonl`) and lists them in the
manifest's `pictures`.

The kernels come from a checkpoint's state_dict (`features.0.weight` in every variant) or
from the first convolution of an exported graph. The exporter folds batch normalization
into that convolution, so a `bn` model's exported kernels are its checkpoint's kernels
times a per-kernel factor; each kernel is min-max scaled on its own, so the picture is
the same while that factor is positive (it starts at 1).
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from core import constants as C
from core import store

CONV1_KEY = "features.0.weight"  # conv1 in every variant's state_dict

# panel title -> (y-axis label, metrics.jsonl fields drawn in it)
CURVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "loss": ("cross-entropy", ("train_loss", "val_loss")),
    "error": ("error (%)", ("train_top1_err", "val_top1_err", "val_top5_err")),
    "learning rate": ("lr", ("lr",)),
}
ERROR_FIELDS = frozenset({"train_top1_err", "val_top1_err", "val_top5_err"})  # 0..1 in the file


# ---------------------------------------------------------------- training curves


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a run's `metrics.jsonl` (a run folder or the file itself), by epoch.

    Raises:
        FileNotFoundError: no such file (or no metrics.jsonl in the folder).
        ValueError: a line is not a JSON object with an `epoch` and every plotted field,
            or the file has no rows.
    """
    path = Path(path)
    if path.is_dir():
        path = path / C.METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path} (a run folder holds metrics.jsonl)")
    needed = ["epoch", *(f for _, fields in CURVES.values() for f in fields)]
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n} is not JSON ({e})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n} is not a JSON object")
        if missing := [k for k in needed if k not in row]:
            raise ValueError(f"{path}:{n} lacks the fields {missing}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no epochs yet")
    return sorted(rows, key=lambda r: r["epoch"])


def curves_figure(rows: list[dict]):
    """A matplotlib Figure with one panel per entry of `CURVES`, x = epoch.

    Each line carries its metrics field as its label; errors are drawn in percent and the
    learning rate on a log scale.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, len(CURVES))
    epochs = [r["epoch"] for r in rows]
    for ax, (title, (ylabel, fields)) in zip(axes, CURVES.items(), strict=True):
        for field in fields:
            factor = 100.0 if field in ERROR_FIELDS else 1.0
            shown = [
                (e, factor * r[field])
                for e, r in zip(epochs, rows, strict=True)
                if r[field] is not None
            ]  # val_top5_err is None with 5 classes or fewer
            if shown:
                ax.plot(*zip(*shown, strict=True), marker=".", label=field)
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    axes[-1].set_yscale("log")
    return fig


def save_curves(rows: list[dict], path: str | Path, dpi: int = 100) -> Path:
    """Write `curves_figure(rows)` as a PNG; returns the path."""
    path = Path(path)
    curves_figure(rows).savefig(path, format="png", dpi=dpi)
    return path


# ---------------------------------------------------------------- conv1 kernels


def conv1_from_state_dict(state: dict) -> np.ndarray:
    """conv1 weights (K, 3, k, k) float32 of a state_dict."""
    if CONV1_KEY not in state:
        raise ValueError(f"the state_dict has no {CONV1_KEY} (conv1 of every AlexNet variant)")
    return state[CONV1_KEY].detach().float().cpu().numpy()


def conv1_from_onnx(path: str | Path) -> np.ndarray:
    """conv1 weights (K, 3, k, k) float32: the weight initializer of the graph's first Conv.

    Raises:
        ValueError: the graph has no Conv node with a constant weight.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:  # ONNX requires nodes in topological order
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in initializers:
            return numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
    raise ValueError(f"{path} has no Conv node with a constant weight to draw")


def load_conv1(source: str | Path, store_dir: str | Path = "model_store") -> tuple[np.ndarray, str]:
    """conv1 weights and a description of where they came from.

    Args:
        source: a checkpoint file, a store version folder (holding manifest.json), or a
            store model `NAME[:VERSION]` (latest version when none is given).
        store_dir: the store that `NAME[:VERSION]` is looked up in.
    """
    path = Path(source)
    if path.is_file():
        from training.checkpoint import load_checkpoint

        try:
            ckpt = load_checkpoint(path)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(
                f"{path} is not a checkpoint written by `alexnet train` ({reason})"
            ) from None
        return conv1_from_state_dict(ckpt["model"]), f"checkpoint {path}"
    if path.is_dir():
        if not (path / C.MANIFEST_FILE).is_file():
            raise FileNotFoundError(
                f"{path} is a folder without {C.MANIFEST_FILE}: give a checkpoint file, a store "
                "version folder or NAME[:VERSION]"
            )
        folder = path
    else:
        try:
            folder = store.resolve(store_dir, str(source))
        except ValueError:
            raise FileNotFoundError(
                f"{source!r} is neither a file, a store version folder nor a model NAME[:VERSION]"
            ) from None
    manifest = store.read_manifest(folder)
    onnx_path = folder / manifest.files["fp32"].file
    return conv1_from_onnx(onnx_path), f"{manifest.id} ({onnx_path})"


def filter_grid(
    weights: np.ndarray, *, columns: int = 16, scale: int = 4, pad: int = 1, background: int = 255
) -> Image.Image:
    """The kernels as an RGB image grid, row by row in kernel order, like the paper's Figure 3.

    Each kernel is min-max scaled on its own to 0..255 (a constant kernel is mid-grey),
    enlarged `scale` times by nearest neighbour and placed in a grid of `columns` tiles
    separated and surrounded by `pad` pixels of `background`.

    Args:
        weights: (K, 3, k_h, k_w) conv1 weights.
        columns: tiles per row (fewer when there are fewer kernels).
        scale: pixels per kernel weight along each side.
        pad: pixels between tiles and around the grid.
        background: grey level of the padding.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f"expected conv1 weights of shape (K, 3, k, k), got {tuple(w.shape)}")
    if columns < 1 or scale < 1 or pad < 0 or not 0 <= background <= 255:
        raise ValueError("need columns >= 1, scale >= 1, pad >= 0 and background in 0..255")
    count, _, kh, kw = w.shape
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    span = w.max(axis=(1, 2, 3), keepdims=True) - lo
    scaled = np.where(span > 0, (w - lo) / np.where(span > 0, span, 1) * 255, 127.5)
    tiles = np.rint(scaled).astype(np.uint8).transpose(0, 2, 3, 1)  # (K, kh, kw, 3)
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    th, tw = kh * scale, kw * scale
    grid = np.full(
        (rows * th + (rows + 1) * pad, columns * tw + (columns + 1) * pad, 3),
        background,
        np.uint8,
    )
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        grid[y : y + th, x : x + tw] = tile
    return Image.fromarray(grid, "RGB")


def save_filters(weights: np.ndarray, path: str | Path, **grid_options) -> Path:
    """Write `filter_grid(weights, **grid_options)` as a PNG; returns the path."""
    path = Path(path)
    filter_grid(weights, **grid_options).save(path, format="PNG")
    return path
