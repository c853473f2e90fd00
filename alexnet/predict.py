"""`alexnet predict IMAGE...`: the top-k labels of image files, as a table or JSON.

    alexnet predict photos/ cat.jpg --model synth --top-k 3
    alexnet predict photos/ --json > predictions.json
    alexnet predict photos/ --url http://127.0.0.1:8000     # ask a running service

Without --url the store's model runs in this process (onnxruntime, no server), with the
service's decode, limits and top-k, so a file gets the same answer here as from /predict.
Folders are walked recursively for the image suffixes; files named on the command line are
always tried. Files that cannot be predicted are named on stderr with the reason and
skipped. Exit status: 0 when every file was predicted, 1 when some were skipped (or the
service failed), 2 when there is nothing to do (no images, an unknown model).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from alexnet.args import UsageError, add_model_arguments, settings_from
from alexnet.predicting import Outcome, Predictor, ServiceError
from core.imaging import IMAGE_SUFFIXES, find_images

log = logging.getLogger(__name__)

MAX_TOP_K = 1000  # what /predict takes
PROGRESS_FROM = 16  # files; fewer finish before a bar says anything
LOCAL_ONLY = ("store", "model", "precision", "device", "threads")  # options that --url ignores

EXAMPLES = """examples:
  alexnet predict cat.jpg dog.png                   # the store's only model, top 5
  alexnet predict photos/ --model synth:2 --top-k 3 # a folder, recursively
  alexnet predict photos/ --json > predictions.json
  alexnet predict photos/ --url http://127.0.0.1:8000

--json prints one document: {"model": "synth:2", "results": [{"file": ..., "predictions":
[{"label", "index", "probability"}...]}...], "skipped": [{"file", "reason"}...]}.
"""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet predict",
        description="Top-k labels of image files (folders are walked recursively) with the "
        "store's model, run here with onnxruntime, or from a running service (--url). "
        "Unusable files are named on stderr and skipped; exit status 0 when all were "
        "predicted, 1 when some were skipped, 2 when there was nothing to predict.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "images", nargs="+", type=Path, metavar="IMAGE", help="image files and folders of them"
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=5,
        help="labels per image, most probable first (default: 5; at most the model's classes)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    p.add_argument(
        "--url",
        default=None,
        help="ask the service at this base URL (POST /predict) instead of running "
        "the model here, e.g. http://127.0.0.1:8000",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="images per engine call, or per request with --url (default: 8)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=3,
        help="with --url: tries again after a 503 (loading, overloaded), waiting "
        "as its Retry-After says (default: 3)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help=f"no progress bar (shown on stderr from {PROGRESS_FROM} files)",
    )
    add_model_arguments(p, gallery=False)
    return p


@dataclass
class Report:
    """What a run predicted and skipped; `exit_code` is the command's exit status."""

    model: str | None
    results: list[Outcome] = field(default_factory=list)
    skipped: list[Outcome] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.skipped else 0

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "results": [{"file": str(o.file), "predictions": o.predictions} for o in self.results],
            "skipped": [{"file": str(o.file), "reason": o.reason} for o in self.skipped],
        }


def collect_files(paths: Sequence[Path]) -> list[Path]:
    """The files to predict: folders walked recursively for image suffixes (sorted), files
    named on the command line as given (whatever their suffix), each once, in order."""
    files: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            try:
                files.update(dict.fromkeys(find_images(path)))
            except ValueError as e:  # an empty folder among others is not an error
                log.warning("%s", e)
        else:
            files[path] = None
    if not files:
        raise UsageError(f"no images found in {', '.join(map(str, paths))} "
                         f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")  # fmt: skip
    return list(files)


def check_arguments(args: argparse.Namespace) -> None:
    if not 1 <= args.top_k <= MAX_TOP_K:
        raise UsageError(f"--top-k must be between 1 and {MAX_TOP_K}, not {args.top_k}")
    if args.batch_size < 1 or args.retries < 0:
        raise UsageError("--batch-size must be at least 1 and --retries at least 0")
    if args.url is not None:
        given = [f"--{name}" for name in LOCAL_ONLY if getattr(args, name) is not None]
        if given:
            raise UsageError(f"{', '.join(given)} choose the model run here; with --url the "
                             "service's own model answers")  # fmt: skip
        if not args.url.startswith(("http://", "https://")):
            raise UsageError(f"--url must start with http:// or https://, not {args.url!r}")


def run(predictor: Predictor, files: Sequence[Path], *, top_k: int, progress: bool) -> Report:
    """Predict every file, naming each one skipped on stderr; a service failure stops the run
    and the files it did not reach are skipped with its reason."""
    report = Report(model=None)
    bar = tqdm(total=len(files), unit="img", desc="predicting", disable=not progress)
    outcomes: Iterator[Outcome] = predictor.predict(files, top_k=top_k)
    with logging_redirect_tqdm(), bar:  # log lines above the bar, not through it
        try:
            for outcome in outcomes:
                if outcome.predicted:
                    report.results.append(outcome)
                else:
                    log.warning("skipped %s: %s", outcome.file, outcome.reason)
                    report.skipped.append(outcome)
                bar.update()
        except ServiceError as e:
            done = len(report.results) + len(report.skipped)
            log.error("%s; %d files not predicted", e, len(files) - done)
            report.skipped += [Outcome(f, reason=f"not predicted: {e}") for f in files[done:]]
    report.model = predictor.model
    return report


def table(results: Sequence[Outcome]) -> str:
    """file, rank, label and probability: one row per prediction."""
    rows = [("file", "rank", "label", "probability")]
    for o in results:
        rows += [(str(o.file), str(rank), p["label"], f"{p['probability']:.4f}")
                 for rank, p in enumerate(o.predictions, 1)]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def local_predictor(args: argparse.Namespace) -> Predictor:
    """The settings' model (--model or ALEXNET_MODEL, ...) loaded in this process."""
    from alexnet.predicting.local import LocalPredictor

    try:
        return LocalPredictor(settings_from(args), batch_size=args.batch_size)
    except FileNotFoundError as e:  # no such model, or the store does not say which
        raise UsageError(str(e)) from None


def main(args: argparse.Namespace) -> Report:
    check_arguments(args)
    files = collect_files(args.images)
    progress = not args.no_progress and len(files) >= PROGRESS_FROM
    if args.url is not None:
        from alexnet.predicting.remote import RemotePredictor

        with RemotePredictor(args.url, per_request=args.batch_size,
                             retries=args.retries) as predictor:  # fmt: skip
            report = run(predictor, files, top_k=args.top_k, progress=progress)
    else:
        predictor = local_predictor(args)
        report = run(predictor, files, top_k=args.top_k, progress=progress)
    print(json.dumps(report.to_json(), indent=2) if args.json else table(report.results))
    log.info("%d of %d files predicted by %s; %d skipped", len(report.results), len(files),
             predictor.where, len(report.skipped))  # fmt: skip
    return report
