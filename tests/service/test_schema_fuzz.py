"""schemathesis against the service's own OpenAPI schema, on a real server on loopback.

Every operation is fuzzed (schema-driven examples, boundary values, invalid data, and
stateful sequences through POST /gallery) with every check but positive_data_acceptance
(see schemathesis.toml): no 5xx, every status documented, every body and header as the
schema says, 401 without the API key, 405 with the right Allow. `make test` runs a short
run; `make soak` a long one (ALEXNET_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.service.conftest import API_KEY

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = int(os.environ.get("ALEXNET_FUZZ_EXAMPLES", "20"))


def run_schemathesis(url: str, workdir: Path, max_examples: int, seed: int = 0) -> dict:
    """Run the schemathesis CLI against `url`; its JSON report (with the exit code)."""
    report = workdir / "schemathesis.json"
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
        "run", f"{url}/openapi.json",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", str(max_examples), "--seed", str(seed),
        "--header", f"Authorization: Bearer {API_KEY}",
        "--request-timeout", "60", "--generation-database", "none",
        "--report", "json", "--report-json-path", str(report),
    ]  # fmt: skip
    # Its caches (.schemathesis/) go to the working folder, not the repository.
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=3000)
    assert report.is_file(), done.stdout[-5000:] + done.stderr[-5000:]
    result = json.loads(report.read_text())
    result["output"] = done.stdout
    return result


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    server: str, tmp_path: Path
) -> None:
    result = run_schemathesis(server, tmp_path, EXAMPLES)
    print(f"schemathesis: {result['test_cases']['generated']} test cases, {EXAMPLES} examples")
    assert result["exit_code"] == 0, result["output"][-8000:]
    assert result["operations"]["tested"] == result["operations"]["total"] >= 12
    assert result["test_cases"]["generated"] > 100
    assert result["failures"] == [] and result["errors"] == []
