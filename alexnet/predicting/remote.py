"""A running service's POST /predict, several files per request.

    with RemotePredictor("http://127.0.0.1:8000", per_request=8) as predictor:
        for outcome in predictor.predict(files, top_k=5):
            ...

What can go wrong, and what happens then:
- a 4xx for a request of several files (one of them is not an image, too large, ...): its
  files are sent again one by one, so each bad file is named with the service's reason and
  the good ones are still predicted. A 413 that none of them gets alone means the request
  held more images than the service takes: later requests carry half as many.
- 503 or 429 (loading, overloaded): wait as its Retry-After says (at most
  MAX_RETRY_AFTER_S) and try again, `retries` times.
- no connection, a 5xx, 503 after the retries, another 4xx (404: not the AlexNet service,
  401/403: a proxy in the way), a different model mid-run: `ServiceError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from alexnet.predicting import Outcome, ServiceError
from alexnet.predicting.local import read_error

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 30.0  # the longest wait between tries, whatever Retry-After says
BUSY = (429, 503)
# what /predict answers for a bad file (the contract: 400/422 unreadable or invalid, 413 too
# large, 415 not an image); any other 4xx is about the service or the URL, not the files
FILE_ERRORS = (400, 413, 415, 422)


def detail_of(response: httpx.Response) -> str:
    """The service's `detail` (or the start of a body that is not the service's JSON)."""
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase
    if isinstance(detail, list):  # FastAPI's invalid request fields
        return "; ".join(str(d.get("msg", d)) for d in detail)
    return str(detail)


def retry_after(response: httpx.Response) -> float:
    """Seconds to wait before trying again: its Retry-After (seconds), 1 if it has none."""
    try:
        seconds = float(response.headers.get("retry-after", "1"))
    except ValueError:  # an HTTP date: not worth parsing for a wait this short
        seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class RemotePredictor:
    """POST /predict of the service at `url`.

    Args:
        url: the service's base URL, e.g. http://127.0.0.1:8000.
        per_request: files per request at most (the service's default limit is 16).
        retries: tries after the first on a 503 or 429.
        timeout: seconds to wait for an answer (a busy CPU service takes a while).
    """

    def __init__(
        self, url: str, *, per_request: int = 8, retries: int = 3, timeout: float = 300.0
    ) -> None:
        self.url = url.rstrip("/")
        self.per_request = per_request
        self.retries = retries
        self.client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0))
        self.model: str | None = None  # name:version, from the first answer

    def __enter__(self) -> RemotePredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    @property
    def where(self) -> str:
        return f"{self.model or 'the model'} at {self.url}"

    def predict(self, files: Sequence[Path], *, top_k: int) -> Iterator[Outcome]:
        """One outcome per file, in order.

        Raises:
            ServiceError: the service cannot answer; the files not yet yielded are lost to
                this run (the caller reports them).
        """
        start = 0
        while start < len(files):
            chunk = files[start : start + self.per_request]
            yield from self._predict_files(chunk, top_k)
            start += len(chunk)

    def _predict_files(self, chunk: Sequence[Path], top_k: int) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        readable: list[tuple[int, Path, bytes]] = []
        for i, path in enumerate(chunk):
            try:
                readable.append((i, path, path.read_bytes()))
            except OSError as e:
                outcomes[i] = Outcome(path, reason=read_error(e))
        if readable:
            outcomes.update(self._send(readable, top_k))
        return [outcomes[i] for i in range(len(chunk))]

    def _send(self, items: list[tuple[int, Path, bytes]], top_k: int) -> dict[int, Outcome]:
        """Outcomes by position for one request's files, split up after a 4xx."""
        r = self._post(items, top_k)
        if r.status_code == 200:
            try:
                body = r.json()
                results = [result["predictions"] for result in body["results"]]
                model = body["model"]
            except (ValueError, KeyError, TypeError) as e:
                raise ServiceError(f"{self.url}/predict answered 200 but not with /predict's "
                                   f"JSON ({type(e).__name__}: {e})") from None  # fmt: skip
            if len(results) != len(items):
                raise ServiceError(f"{self.url}/predict answered {len(results)} results for "
                                   f"{len(items)} images")  # fmt: skip
            self._check_model(model)
            return {i: Outcome(path, predictions=predictions)
                    for (i, path, _), predictions in zip(items, results, strict=True)}  # fmt: skip
        if r.status_code in BUSY:
            raise ServiceError(f"{self.url}/predict still answered {r.status_code} after "
                               f"{self.retries + 1} tries: {detail_of(r)}")  # fmt: skip
        if r.status_code not in FILE_ERRORS:
            raise ServiceError(f"{self.url}/predict answered {r.status_code}: {detail_of(r)}")
        if len(items) == 1:
            (i, path, _), = items  # fmt: skip
            reason = f"{detail_of(r)} (HTTP {r.status_code})"
            return {i: Outcome(path, reason=reason, status=r.status_code)}
        log.debug("%d for %d files (%s): sending them one by one", r.status_code, len(items),
                  detail_of(r))  # fmt: skip
        outcomes: dict[int, Outcome] = {}
        for item in items:
            outcomes.update(self._send([item], top_k))
        if r.status_code == 413 and all(o.status != 413 for o in outcomes.values()):
            self.per_request = max(1, len(items) // 2)
            log.info("the service refused %d images in one request (%s); sending %d per request",
                     len(items), detail_of(r), self.per_request)  # fmt: skip
        return outcomes

    def _post(self, items: list[tuple[int, Path, bytes]], top_k: int) -> httpx.Response:
        """The answer to one request, after waiting out 503s and 429s."""
        files = [("image", (path.name, data)) for _, path, data in items]
        tries = 0
        while True:
            try:
                r = self.client.post(f"{self.url}/predict", params={"top_k": top_k}, files=files)
            except httpx.TransportError as e:
                raise ServiceError(
                    f"cannot reach the service at {self.url} ({type(e).__name__}: {e}); "
                    "is `alexnet serve` running there?"
                ) from None
            if r.status_code not in BUSY or tries == self.retries:
                return r
            tries += 1
            wait = retry_after(r)
            log.warning("%s answered %d (%s); trying again in %.0f s", self.url, r.status_code,
                        detail_of(r), wait)  # fmt: skip
            time.sleep(wait)

    def _check_model(self, model: str) -> None:
        if self.model is None:
            self.model = model
        elif model != self.model:
            raise ServiceError(
                f"the service's model changed from {self.model} to {model} during the run"
            )
