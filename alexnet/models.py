"""`alexnet models`: what the model store holds."""

from __future__ import annotations

import argparse
import json

from alexnet.args import add_store_argument
from core import store


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet models",
        description="List the models in the store: versions, precisions, classes and figures.",
    )
    add_store_argument(p)
    p.add_argument("--json", action="store_true", help="print the manifests as JSON")
    return p


def _err(metrics: dict, protocol: str, which: str) -> str:
    value = metrics.get(protocol, {}).get(which)
    return "-" if value is None else f"{value:.1%}"


def main(args: argparse.Namespace) -> list[store.Manifest]:
    manifests = store.list_models(args.store)
    if args.json:
        print(json.dumps([m.model_dump() for m in manifests], indent=2))
        return manifests
    if not manifests:
        print(f"no models in {args.store}")
        return manifests
    rows = [("model", "arch", "classes", "precisions", "top-1 err (1 / 10 crops)",
             "top-5 err (1 / 10 crops)")]  # fmt: skip
    for m in manifests:
        errors = [
            " / ".join(_err(m.metrics, protocol, which) for protocol in ("single_crop", "ten_crop"))
            for which in ("top1_err", "top5_err")
        ]
        rows.append((m.id, m.arch, str(m.num_classes), ",".join(m.files), *errors))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return manifests
