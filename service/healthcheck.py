"""`python -m service.healthcheck`: exit 0 when the local service answers /health/ready with 200.

The container's HEALTHCHECK and docker-compose's healthcheck run it, so the serving image
needs no curl. It asks 127.0.0.1 on ALEXNET_PORT (default 8000); anything but a 200 within
the timeout (a 503 while the model loads, a refused connection) exits 1.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def ready(port: int, timeout: float = 4.0) -> tuple[bool, str]:
    """Whether http://127.0.0.1:PORT/health/ready answers 200, and what it said."""
    url = f"http://127.0.0.1:{port}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - fixed local URL
            return r.status == 200, f"{url}: {r.status}"
    except urllib.error.HTTPError as e:
        return False, f"{url}: {e.code} {e.read().decode(errors='replace')[:200]}"
    except OSError as e:
        return False, f"{url}: {e}"


def main() -> int:
    ok, message = ready(int(os.environ.get("ALEXNET_PORT", "8000")))
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
