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
