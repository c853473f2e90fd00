"""Settings: ALEXNET_* variables, command-line options that win, validation at start-up."""

from __future__ import annotations

import pydantic
import pytest

from alexnet.args import settings_from
from alexnet.serve import get_args_parser
from service.config import Settings


def test_environment_then_options(monkeypatch) -> None:
    monkeypatch.setenv("ALEXNET_PORT", "9001")
    monkeypatch.setenv("ALEXNET_MODEL", "env-model")
    monkeypatch.setenv("ALEXNET_MAX_BATCH", "4")
    s = settings_from(get_args_parser().parse_args(["--model", "cli-model:2"]))
    assert (s.port, s.model, s.max_batch, s.precision) == (9001, "cli-model:2", 4, "auto")
    assert s.api_key is None


def test_invalid_settings_fail_naming_the_choices(monkeypatch) -> None:
    monkeypatch.setenv("ALEXNET_PRECISION", "fp8")
    with pytest.raises(pydantic.ValidationError, match="'auto', 'fp32', 'fp16' or 'int8'"):
        Settings()
    monkeypatch.delenv("ALEXNET_PRECISION")
    monkeypatch.setenv("ALEXNET_PORT", "70000")
    with pytest.raises(pydantic.ValidationError, match="port"):
        Settings()


def test_api_key_is_secret(monkeypatch) -> None:
    monkeypatch.setenv("ALEXNET_API_KEY", "s3cret")
    s = Settings()
    assert s.api_key.get_secret_value() == "s3cret" and "s3cret" not in repr(s)


def test_gallery_exact_max(monkeypatch) -> None:
    assert Settings().gallery_exact_max == 5_000
    monkeypatch.setenv("ALEXNET_GALLERY_EXACT_MAX", "500")
    assert Settings().gallery_exact_max == 500
    monkeypatch.setenv("ALEXNET_GALLERY_EXACT_MAX", "-1")
    with pytest.raises(pydantic.ValidationError, match="gallery_exact_max"):
        Settings()


def test_serve_help_lists_every_setting_the_service_reads() -> None:
    """`alexnet serve --help` (the real command) names each field of Settings: its option, its
    environment variable and its description; the API key only as a variable."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "2000"}  # no line wrapping (it may break at a hyphen)
    proc = subprocess.run([sys.executable, "-m", "alexnet", "serve", "--help"],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    help_text = " ".join(proc.stdout.split())  # argparse wraps lines
    for name, field in Settings.model_fields.items():
        assert f"ALEXNET_{name.upper()}" in help_text, name
        assert " ".join(field.description.split()) in help_text, name
        option = f"--{name.replace('_', '-')}"
        assert (option in help_text) == (name != "api_key"), option
    assert "%%" not in help_text


def test_every_serve_option_reaches_the_settings() -> None:
    args = get_args_parser().parse_args(
        ["--max-batch", "4", "--max-wait-ms", "2.5", "--gallery-exact-max", "10",
         "--keep-alive-s", "30", "--device", "cpu", "--threads", "2", "--store", "/tmp/s",
         "--max-metadata-bytes", "100"]
    )  # fmt: skip
    s = settings_from(args)
    assert (s.max_batch, s.max_wait_ms, s.gallery_exact_max, s.keep_alive_s) == (4, 2.5, 10, 30)
    assert (s.device, s.threads, str(s.store), s.max_metadata_bytes) == ("cpu", 2, "/tmp/s", 100)
    with pytest.raises(SystemExit):  # argparse names the choices
        get_args_parser().parse_args(["--precision", "fp8"])
