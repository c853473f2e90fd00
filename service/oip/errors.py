"""The protocol's error answers: `{"error": "<message>"}` with a 4xx (or 503) status.

The KServe v2 REST protocol answers every failure with a JSON object holding one string,
`error`; clients such as tritonclient read that field and nothing else. The rest of the
service answers `{"detail": ...}`, so the paths of the protocol are told apart here.
"""

from __future__ import annotations

PREFIX = "/v2"


class ProtocolError(ValueError):
    """A request the protocol refuses; `status_code` is the HTTP answer (400 by default).

    Args:
        message: what was wrong, naming the input, parameter or value.
        status_code: 400 a malformed request or tensor, 404 an unknown model or version,
            413 over a size limit, 415 an unsupported content coding.
    """

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def is_protocol_path(path: str) -> bool:
    """Whether `path` belongs to the protocol (its errors are then `{"error": ...}`)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def error_body(path: str, message: str) -> dict[str, str]:
    """The JSON error body for `path`: the protocol's `error` or the service's `detail`."""
    return {"error": message} if is_protocol_path(path) else {"detail": message}
