"""Where `alexnet predict` gets its answers: the store's model run in this process
(`local.LocalPredictor`) or a running service's POST /predict (`remote.RemotePredictor`).

Both take a list of files and yield one `Outcome` per file, in order: the same prediction
objects as /predict answers (`{"label", "index", "probability"}`, most probable first), or
the reason the file was skipped. Both decode with the service's code and limits, so a file
gets the same answer from either.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Outcome:
    """What became of one file: its top-k predictions, or why it was skipped."""

    file: Path
    predictions: list[dict] | None = None
    reason: str | None = None
    status: int | None = None  # the HTTP status of the service's refusal, if it refused it

    @property
    def predicted(self) -> bool:
        return self.predictions is not None


class ServiceError(RuntimeError):
    """The service failed as a whole (unreachable, still unavailable after the retries, a 5xx,
    a model switched mid-run): no further file can be predicted."""


class Predictor(Protocol):
    """What `alexnet predict` asks of either source."""

    @property
    def model(self) -> str | None:
        """name:version of the model answering (None until a service has answered)."""

    @property
    def where(self) -> str:
        """The model and where it runs, for the closing log line."""

    def predict(self, files: Sequence[Path], *, top_k: int) -> Iterator[Outcome]:
        """One outcome per file, in order; raises ServiceError when nothing more can be
        predicted."""
