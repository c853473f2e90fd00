"""Hostile and malformed requests against a real server: each gets its documented answer.

The corpus is generated here (Pillow, struct, zlib). Every case names the one status the
README documents for it: 4xx with a JSON `{"detail": ...}` for what is refused, 200/201 for
valid-but-unusual images (CMYK, 16-bit, palette with transparency, animated: decode turns
every mode into RGB and takes the first frame). None may produce a 5xx, the server must stay
up, and its resident memory must stay bounded while the corpus is sent again and again.
"""

from __future__ import annotations

import io
import json
import random
import select
import socket
import struct
import time
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from PIL import Image

from alexnet.local_server import Server
from service.config import Settings
from service.decode import ImageError, decode
from tests.service.conftest import API_KEY, SMALL_LIMITS, encode, serve

AUTH = {"Authorization": f"Bearer {API_KEY}"}
BOUNDARY = b"hostile-7f3a"
MULTIPART = b"multipart/form-data; boundary=" + BOUNDARY
MAX_REQUEST_BYTES = Settings(**SMALL_LIMITS).max_request_bytes


# ------------------------------------------------------------------ building the corpus


def part(
    data: bytes,
    field: bytes | None = b"image",
    filename: bytes | None = b"upload.jpg",
    content_type: bytes | None = None,
) -> bytes:
    """One multipart part, its Content-Disposition written byte for byte."""
    disposition = b"Content-Disposition: form-data"
    if field is not None:
        disposition += b'; name="' + field + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    headers = [disposition] + ([b"Content-Type: " + content_type] if content_type else [])
    return b"\r\n".join(headers) + b"\r\n\r\n" + data


def field_part(name: bytes, value: bytes) -> bytes:
    return part(value, field=name, filename=None)


def multipart(*parts: bytes) -> bytes:
    body = b"".join(b"--" + BOUNDARY + b"\r\n" + p + b"\r\n" for p in parts)
    return body + b"--" + BOUNDARY + b"--\r\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(
    width: int,
    height: int,
    *,
    bit_depth: int = 8,
    colour: int = 2,
    extra: bytes = b"",
    rows: bytes | None = None,
) -> bytes:
    """A PNG written chunk by chunk: any header, optional chunks before IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    rows = rows if rows is not None else b"\0" * 64
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def tiff_header(width: int, height: int) -> bytes:
    """A little-endian grayscale TIFF whose header claims width x height pixels."""
    entries = [  # tag, type (3 SHORT, 4 LONG), value
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8 + 2 + 9 * 12 + 4),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, 16),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in entries
    )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\0" * 16


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 header is rewritten to claim width x height."""
    data = encode(Image.new("RGB", (16, 16)), "JPEG")
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def animated(fmt: str, **kw) -> bytes:
    frames = [Image.new("RGB", (64, 48), c) for c in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], **kw)
    return buf.getvalue()


def noise(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    return Image.effect_noise(size, 60).convert(mode)


def palette_with_transparency() -> bytes:
    img = noise((80, 60)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(img, "PNG", transparency=0)


def png_16bit_rgb() -> bytes:
    rows = b"".join(b"\0" + bytes(range(48)) for _ in range(8))  # 8x8, 6 bytes a pixel
    return png_file(8, 8, bit_depth=16, colour=2, rows=rows)


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    return encode(noise((64, 32)), "JPEG", exif=exif)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@dataclass(frozen=True)
class Case:
    """One request and the status the README documents for it."""

    name: str
    status: int
    body: bytes = b""
    content_type: bytes | None = MULTIPART
    path: str = "/predict"
    params: dict = field(default_factory=dict)
    headers: dict | None = None  # None: the API key, on /gallery
    fragment: str = ""  # expected in the error's detail


def image_case(name: str, status: int, data: bytes, fragment: str = "", **kw) -> Case:
    return Case(name, status, multipart(part(data, **kw)), fragment=fragment)


def gallery_case(name: str, status: int, *fields: bytes, fragment: str = "", **kw) -> Case:
    body = multipart(part(encode(noise((40, 40)), "PNG")), *fields)
    return Case(name, status, body, path="/gallery", fragment=fragment, **kw)


def corpus() -> list[Case]:
    rgb = noise((96, 72))
    jpeg, png = encode(rgb, "JPEG"), encode(rgb, "PNG")
    two_parts = multipart(part(png), part(jpeg))
    return [
        # --- nothing there
        Case("empty-body", 422, b"", fragment="image"),
        Case("empty-body-no-content-type", 422, b"", content_type=None, fragment="image"),
        image_case("zero-byte-file", 400, b"", "empty"),
        Case(
            "zero-byte-file-after-a-good-one",
            400,
            multipart(part(png), part(b"")),
            fragment="empty",
        ),
        # --- truncated or corrupt
        image_case("truncated-jpeg", 422, truncated(jpeg), "truncated or corrupt"),
        image_case(
            "truncated-progressive-jpeg",
            422,
            truncated(encode(rgb, "JPEG", progressive=True)),
            "truncated or corrupt",
        ),
        image_case("truncated-png", 422, truncated(png), "truncated or corrupt"),
        image_case("png-signature-only", 415, b"\x89PNG\r\n\x1a\n", "not an image"),
        image_case("jpeg-marker-only", 415, b"\xff\xd8\xff", "not an image"),
        image_case("png-bad-header-crc", 415, png[:29] + b"\0\0\0\0" + png[33:], "not an image"),
        image_case(
            "png-text-chunk-bomb",
            422,
            png_file(
                1, 1, extra=png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * 30_000_000, 9))
            ),
            "corrupt",
        ),
        image_case(
            "png-icc-profile-bomb",
            422,
            png_file(
                1, 1, extra=png_chunk(b"iCCP", b"p\0\0" + zlib.compress(b"a" * 30_000_000, 9))
            ),
            "corrupt",
        ),
        # --- too large: pixels from the header, before decoding; bytes
        image_case(
            "decompression-bomb-png-6000x6000",
            413,
            encode(Image.new("1", (6000, 6000)), "PNG"),
            "pixels",
        ),
        image_case("png-header-30000x30000", 413, png_file(30000, 30000), "pixels"),
        image_case("jpeg-header-65000x65000", 413, jpeg_with_size(65000, 65000), "pixels"),
        image_case(
            "gif-screen-65535x65535",
            413,
            b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\0\0\0,\0\0\0\0\1\0\1\0\0\2\2D\1\0;",
            "pixels",
        ),
        image_case(
            "bmp-header-100000x100000",
            413,
            b"BM"
            + struct.pack("<IHHI", 0, 0, 0, 54)
            + struct.pack("<IiiHHIIiiII", 40, 100000, 100000, 1, 24, 0, 0, 0, 0, 0, 0),
            "pixels",
        ),
        image_case("tiff-header-60000x60000", 413, tiff_header(60000, 60000), "pixels"),
        image_case("over-the-byte-limit", 413, encode(noise((900, 900)), "BMP"), "bytes"),
        Case("five-parts-limit-is-4", 413, multipart(*[part(png)] * 5), fragment="limit is 4"),
        # --- valid but unusual images: decoded to RGB (first frame) and answered
        image_case("cmyk-jpeg", 200, encode(rgb.convert("CMYK"), "JPEG")),
        image_case("cmyk-tiff", 200, encode(rgb.convert("CMYK"), "TIFF")),
        image_case("16-bit-grayscale-png", 200, encode(Image.new("I;16", (64, 48), 40000), "PNG")),
        image_case("16-bit-rgb-png", 200, png_16bit_rgb()),
        image_case("32-bit-float-tiff", 200, encode(Image.new("F", (40, 30), 0.5), "TIFF")),
        image_case("palette-png-with-transparency", 200, palette_with_transparency()),
        image_case("grayscale-alpha-png", 200, encode(rgb.convert("LA"), "PNG")),
        image_case("rgba-webp", 200, encode(rgb.convert("RGBA"), "WEBP")),
        image_case("1-bit-bmp", 200, encode(rgb.convert("1"), "BMP")),
        image_case("animated-gif", 200, animated("GIF", duration=50, loop=0)),
        image_case("animated-png", 200, animated("PNG")),
        image_case("animated-webp", 200, animated("WEBP")),
        image_case("multi-page-tiff", 200, animated("TIFF")),
        image_case("exif-rotated-jpeg", 200, exif_rotated_jpeg()),
        image_case("1x1-png", 200, encode(Image.new("RGB", (1, 1)), "PNG")),
        image_case("1x4000-png", 200, encode(Image.new("RGB", (1, 4000)), "PNG")),
        image_case("png-declared-as-text-html", 200, png, content_type=b"text/html"),
        image_case("non-utf8-filename", 200, png, filename=b"\xff\xfe\x80caf\xe9.png"),
        image_case("traversal-filename", 200, png, filename=b"../../../../etc/passwd"),
        # --- not images, or not accepted formats
        image_case(
            "svg",
            415,
            b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
            "not an image",
            filename=b"a.svg",
        ),
        image_case("pdf", 415, encode(Image.new("RGB", (50, 50)), "PDF"), "", filename=b"a.pdf"),
        image_case("html", 415, b"<!doctype html><html><body>hi</body></html>", "not an image"),
        image_case("text-renamed-jpg", 415, b"just some text, renamed", "not an image"),
        image_case(
            "ico", 415, encode(Image.new("RGB", (32, 32)), "ICO"), "ICO images are not accepted"
        ),
        image_case("eps-header", 415, b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\n", "EPS"),
        image_case("zip", 415, b"PK\x03\x04" + b"\0" * 26, "not an image"),
        image_case("elf-binary", 415, b"\x7fELF\x02\x01\x01" + b"\0" * 57, "not an image"),
        # --- the multipart body itself
        Case("2000-parts", 400, multipart(*[part(b"x")] * 2000), fragment="Too many files"),
        Case(
            "2000-text-fields",
            400,
            multipart(part(png), *[field_part(b"f", b"v")] * 2000),
            fragment="Too many fields",
        ),
        image_case("wrong-field-name", 422, png, "image", field=b"file"),
        image_case("non-utf8-field-name", 422, png, "image", field=b"\xff\xfe"),
        image_case("image-sent-as-text-field", 422, png, "UploadFile", filename=None),
        Case(
            "rfc5987-filename-star",
            422,
            multipart(
                b"Content-Disposition: form-data; name=\"image\"; filename*=UTF-8''%FF.png\r\n\r\n"
                + png
            ),
            fragment="UploadFile",
        ),
        Case("part-without-name", 400, multipart(part(png, field=None)), fragment="name"),
        Case(
            "no-boundary", 400, two_parts, content_type=b"multipart/form-data", fragment="boundary"
        ),
        Case(
            "wrong-boundary",
            400,
            two_parts,
            content_type=b"multipart/form-data; boundary=zz",
            fragment="multipart",
        ),
        Case(
            "non-ascii-boundary",
            400,
            two_parts,
            content_type=b"multipart/form-data; boundary=\xff",
            fragment="multipart",
        ),
        Case(
            "unterminated-headers",
            400,
            b"--"
            + BOUNDARY
            + b'\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n'
            + b"X: y\r\n" * 20000,
            fragment="multipart",
        ),
        # --- other content types
        Case(
            "json-body",
            422,
            b'{"image": "aGVsbG8="}',
            content_type=b"application/json",
            fragment="image",
        ),
        Case(
            "urlencoded-body",
            422,
            b"image=hello",
            content_type=b"application/x-www-form-urlencoded",
            fragment="UploadFile",
        ),
        Case("text-plain-body", 422, b"hello", content_type=b"text/plain", fragment="image"),
        Case("raw-png-body", 422, png, content_type=b"image/png", fragment="image"),
        Case(
            "multipart-mixed",
            422,
            two_parts,
            content_type=b"multipart/mixed; boundary=" + BOUNDARY,
            fragment="image",
        ),
        Case(
            "non-ascii-content-type",
            422,
            two_parts,
            content_type=b"\xff\xfe/\x80",
            fragment="image",
        ),
        # --- query values
        *[
            Case(f"query-{k}={v}", 422, two_parts, params={k: v}, fragment=k)
            for k, v in [
                ("top_k", "0"),
                ("top_k", "-1"),
                ("top_k", "five"),
                ("top_k", "1001"),
                ("top_k", "1" * 30),
                ("top_k", "1.5"),
                ("top_k", ""),
                ("embedding", "maybe"),
                ("embedding", ""),
            ]
        ],
        Case("query-unknown-parameter-ignored", 200, two_parts, params={"colour": "red"}),
        Case(
            "similar-k=0",
            422,
            multipart(part(png)),
            path="/similar",
            params={"k": "0"},
            fragment="k",
        ),
        Case("similar-two-images-first-taken", 200, two_parts, path="/similar"),
        # --- gallery writes: API key, label and metadata
        gallery_case("gallery-without-key", 401, headers={}, fragment="API key"),
        gallery_case(
            "gallery-wrong-key", 401, headers={"Authorization": "Bearer nope"}, fragment="API key"
        ),
        gallery_case(
            "gallery-key-with-suffix",
            401,
            headers={"Authorization": f"Bearer {API_KEY}x"},
            fragment="API key",
        ),
        gallery_case(
            "gallery-basic-scheme",
            401,
            headers={"Authorization": f"Basic {API_KEY}"},
            fragment="API key",
        ),
        gallery_case(
            "gallery-bearer-without-token",
            401,
            headers={"Authorization": "Bearer"},
            fragment="API key",
        ),
        gallery_case(
            "metadata-not-json", 422, field_part(b"metadata", b"{nope"), fragment="not valid JSON"
        ),
        gallery_case(
            "metadata-array", 422, field_part(b"metadata", b"[1, 2]"), fragment="JSON object"
        ),
        gallery_case("metadata-nan", 422, field_part(b"metadata", b'{"a": NaN}'), fragment="NaN"),
        gallery_case(
            "metadata-infinity",
            422,
            field_part(b"metadata", b'{"a": -Infinity}'),
            fragment="Infinity",
        ),
        gallery_case(
            "metadata-lone-surrogate",
            422,
            field_part(b"metadata", b'{"a": "\\ud800"}'),
            fragment="not valid JSON",
        ),
        gallery_case(
            "metadata-300-levels",
            422,
            field_part(b"metadata", deep(300).encode()),
            fragment="nested deeper",
        ),
        gallery_case(
            "metadata-8000-brackets",
            422,
            field_part(b"metadata", b"[" * 8000 + b"]" * 8000),
            fragment="not valid JSON",
        ),
        gallery_case(
            "metadata-5000-digit-number",
            422,
            field_part(b"metadata", b'{"a": ' + b"9" * 5000 + b"}"),
            fragment="not valid JSON",
        ),
        gallery_case(
            "metadata-over-16-KiB",
            413,
            field_part(b"metadata", json.dumps({"a": "x" * 20000}).encode()),
            fragment="metadata",
        ),
        gallery_case(
            "metadata-over-the-parsers-1-MiB",
            400,
            field_part(b"metadata", json.dumps({"a": "x" * 1_100_000}).encode()),
            fragment="exceeded",
        ),
        gallery_case(
            "label-over-200-characters", 422, field_part(b"label", b"x" * 201), fragment="label"
        ),
        gallery_case("metadata-32-levels-stored", 201, field_part(b"metadata", deep(31).encode())),
        gallery_case(
            "metadata-non-utf8-read-as-latin1", 201, field_part(b"metadata", b'{"a": "caf\xe9"}')
        ),
        gallery_case("label-non-utf8-read-as-latin1", 201, field_part(b"label", b"caf\xe9\xff")),
        gallery_case("label-with-newlines", 201, field_part(b"label", b"a b\r\nc")),
        # PostgreSQL's text and jsonb cannot hold NUL: refused alike on both backends
        gallery_case("label-with-nul", 422, field_part(b"label", b"a\x00b")),
        gallery_case(
            "metadata-with-nul",
            422,
            field_part(b"metadata", b'{"a": ["x\\u0000y"]}'),
            fragment="NUL",
        ),  # fmt: skip
        gallery_case("metadata-key-with-nul", 422, field_part(b"metadata", b'{"\\u0000": 1}')),
    ]


# ------------------------------------------------------------------ the Open Inference Protocol

INFER = "/v2/models/tiny/infer"
ONE_IMAGE = bytes(256 * 256 * 3)  # a black image, as the `images` input's binary data
MAX_JSON_BYTES = 8 * 4 * 256 * 256 * 3 + 65_536  # service.oip.model.max_json_bytes, 4 images


def v2_case(
    name: str,
    status: int,
    inputs: list[dict] | None = None,
    binary: bytes = b"",
    fragment: str = "",
    *,
    document: dict | None = None,
    body: bytes | None = None,
    header_length: str | None = "auto",
    path: str = INFER,
    headers: dict | None = None,
) -> Case:
    """An inference request: `document` (or {"inputs": inputs}) as JSON, then `binary`, with
    Inference-Header-Content-Length the JSON's size ("auto"), a given value, or absent."""
    head = json.dumps(document if document is not None else {"inputs": inputs}).encode()
    headers = dict(headers or {})
    if header_length == "auto" and binary:
        headers["Inference-Header-Content-Length"] = str(len(head))
    elif header_length not in (None, "auto"):
        headers["Inference-Header-Content-Length"] = header_length
    content = body if body is not None else head + binary
    return Case(name, status, content, content_type=b"application/octet-stream", path=path,
                headers=headers, fragment=fragment)  # fmt: skip


def images(shape: list, datatype: str = "UINT8", **extra) -> dict:
    return {"name": "images", "shape": shape, "datatype": datatype} | extra


def binary_images(n: int = 1, size: int | None = None, **extra) -> dict:
    size = n * len(ONE_IMAGE) if size is None else size
    return images([n, 256, 256, 3], parameters={"binary_data_size": size}, **extra)


def files(*elements: bytes) -> tuple[list[dict], bytes]:
    """The `image_bytes` input with these encoded files, as binary data."""
    raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    spec = {"name": "image_bytes", "shape": [len(elements)], "datatype": "BYTES",
            "parameters": {"binary_data_size": len(raw)}}  # fmt: skip
    return [spec], raw


def bytes_case(name: str, status: int, *elements: bytes, fragment: str = "") -> Case:
    return v2_case(name, status, *files(*elements), fragment)


def v2_corpus() -> list[Case]:
    rgb = noise((96, 72))
    jpeg, png = encode(rgb, "JPEG"), encode(rgb, "PNG")
    json_pixels = [0] * len(ONE_IMAGE)
    fp32 = bytes(4 * len(ONE_IMAGE))
    # fmt: off
    return [
        # --- valid: answered with both outputs as JSON
        v2_case("v2-binary-images", 200, [binary_images()], ONE_IMAGE),
        v2_case("v2-json-images", 200, [images([1, 256, 256, 3], data=json_pixels)]),
        bytes_case("v2-image-bytes-jpeg-and-png", 200, jpeg, png),
        bytes_case("v2-image-bytes-cmyk-jpeg", 200, encode(rgb.convert("CMYK"), "JPEG")),
        v2_case("v2-binary-images-on-the-version-path", 200, [binary_images()], ONE_IMAGE,
                path="/v2/models/tiny/versions/1/infer"),
        # --- the body and its header
        v2_case("v2-empty-body", 400, body=b"", fragment="not valid"),
        v2_case("v2-not-json", 400, body=b"hello", fragment="not valid"),
        v2_case("v2-json-array", 400, body=b"[]", fragment="must be a JSON object"),
        v2_case("v2-json-not-utf8", 400, body=b'{"inputs": "\xff"}', fragment="not UTF-8"),
        v2_case("v2-json-nan", 400, [images([1], data=[float("nan")])], fragment="NaN"),
        v2_case("v2-json-nested-100000-deep", 400, body=b"[" * 100_000 + b"]" * 100_000,
                fragment="nested too deeply"),
        v2_case("v2-no-inputs", 400, [], fragment="at least 1 item"),
        v2_case("v2-shape-of-strings", 400, [images(["1", 256, 256, 3], data=[])],
                fragment="valid integer"),
        v2_case("v2-header-length-past-the-body", 400, [binary_images()], ONE_IMAGE,
                header_length=str(10**9), fragment="but the body is only"),
        v2_case("v2-header-length-not-a-number", 400, [binary_images()], ONE_IMAGE,
                header_length="abc", fragment="decimal number"),
        v2_case("v2-header-length-negative", 400, [binary_images()], ONE_IMAGE,
                header_length="-5", fragment="decimal number"),
        v2_case("v2-header-length-cuts-the-json", 400, [binary_images()], ONE_IMAGE,
                header_length="20", fragment="not valid"),
        v2_case("v2-binary-data-without-header-length", 400, [binary_images()], ONE_IMAGE,
                header_length=None, fragment="not valid"),
        v2_case("v2-gzip-body", 415, [binary_images()], ONE_IMAGE,
                headers={"Content-Encoding": "gzip"},
                fragment="Content-Encoding 'gzip'"),
        v2_case("v2-json-over-its-limit", 413, body=b"{" + b" " * MAX_JSON_BYTES + b"}",
                fragment="send large tensors as binary data"),
        # --- byte counts
        v2_case("v2-binary-one-byte-short", 400, [binary_images()], ONE_IMAGE[:-1],
                fragment="runs past the end"),
        v2_case("v2-binary-one-byte-extra", 400, [binary_images()], ONE_IMAGE + b"\0",
                fragment="add up to 196608"),
        v2_case("v2-binary-size-not-the-shapes", 400, [binary_images(size=100)], b"x" * 100,
                fragment="is 100 bytes, but UINT8 of shape [1, 256, 256, 3] is 196608"),
        v2_case("v2-binary-size-negative", 400, [binary_images(size=-1)], b"x",
                fragment="binary_data_size must be an integer >= 0"),
        v2_case("v2-binary-size-a-string", 400, [binary_images(size="9")], b"x" * 9,
                fragment="binary_data_size must be an integer"),
        v2_case("v2-data-and-binary", 400, [binary_images(data=[1])], ONE_IMAGE,
                fragment="both 'data' and a binary_data_size"),
        v2_case("v2-neither-data-nor-binary", 400, [images([1, 256, 256, 3])],
                fragment="neither 'data' nor"),
        # --- datatypes and shapes
        v2_case("v2-fp32-images", 400, [binary_images(size=len(fp32), datatype="FP32")], fp32,
                fragment="has datatype FP32; it takes UINT8"),
        v2_case("v2-unknown-datatype", 400, [images([1, 256, 256, 3], "UINT7", data=[])],
                fragment="datatype UINT7"),
        v2_case("v2-image-bytes-as-uint8", 400,
                [{"name": "image_bytes", "shape": [3], "datatype": "UINT8", "data": [1, 2, 3]}],
                fragment="it takes BYTES"),
        v2_case("v2-shape-224", 400, [images([1, 224, 224, 3], data=[])],
                fragment="it takes [N,256,256,3]"),
        v2_case("v2-shape-without-batch", 400, [images([256, 256, 3], data=[])],
                fragment="it takes [N,256,256,3]"),
        v2_case("v2-negative-dimension", 400, [images([-1, 256, 256, 3], data=[])],
                fragment=">= 0"),
        v2_case("v2-zero-images", 400, [images([0, 256, 256, 3], data=[])],
                fragment="holds no image"),
        v2_case("v2-shape-product-mismatch", 400, [images([1, 256, 256, 3], data=[0] * 10)],
                fragment="'data' has 10 elements, but shape [1, 256, 256, 3] has"),
        v2_case("v2-huge-declared-shape", 413, [binary_images(n=10**12, size=len(ONE_IMAGE))],
                ONE_IMAGE, fragment="1000000000000 images in one request; the limit is"),
        v2_case("v2-huge-declared-bytes-shape", 413,
                [{"name": "image_bytes", "shape": [2**62], "datatype": "BYTES", "data": ["x"]}],
                fragment="the limit is 4"),
        v2_case("v2-huge-dimension-in-the-image", 400, [images([1, 10**15, 256, 3], data=[])],
                fragment="it takes [N,256,256,3]"),
        v2_case("v2-data-a-string", 400, [images([1, 256, 256, 3], data="AAAA")],
                fragment="'data' must be a JSON array, not str"),
        v2_case("v2-data-an-object", 400, [images([1, 256, 256, 3], data={"a": 1})],
                fragment="not dict"),
        v2_case("v2-data-out-of-range", 400, [images([1, 256, 256, 3], data=[256] * 196608)],
                fragment="must lie in [0, 255]"),
        v2_case("v2-data-floats", 400, [images([1, 256, 256, 3], data=[0.5] * 196608)],
                fragment="must be JSON integers"),
        v2_case("v2-data-ragged", 400, [images([1, 256, 256, 3], data=[[0, 1], [2]])],
                fragment="not a regular array"),
        v2_case("v2-too-many-images", 413, [binary_images(n=5)], ONE_IMAGE * 5,
                fragment="5 images in one request; the limit is 4"),
        # --- inputs and outputs
        v2_case("v2-both-inputs", 400, [binary_images(), *files(png)[0]], ONE_IMAGE
                + files(png)[1], fragment="not both"),
        v2_case("v2-unknown-input", 400, [images([1, 256, 256, 3], data=[]) | {"name": "x"}],
                fragment="unknown input 'x'"),
        v2_case("v2-input-twice", 400, [binary_images(), binary_images()], ONE_IMAGE * 2,
                fragment="given twice"),
        v2_case("v2-unknown-output", 400, document={"inputs": [images([1], data=[0])],
                "outputs": [{"name": "fc6"}]}, fragment="unknown output 'fc6'"),
        v2_case("v2-classification", 400, document={"inputs": [images([1], data=[0])],
                "outputs": [{"name": "probs", "parameters": {"classification": 3}}]},
                fragment="classification extension"),
        v2_case("v2-binary-data-output-a-string", 400, document={
                "inputs": [images([1], data=[0])], "parameters": {"binary_data_output": "yes"}},
                fragment="must be true or false"),
        # --- image_bytes: the decoder's limits and answers, as for /predict
        v2_case("v2-bytes-truncated-length-prefix", 400, [{"name": "image_bytes", "shape": [1],
                "datatype": "BYTES", "parameters": {"binary_data_size": 2}}], b"\x10\x00",
                fragment="its 4-byte length is cut off"),
        v2_case("v2-bytes-length-past-the-end", 400, [{"name": "image_bytes", "shape": [1],
                "datatype": "BYTES", "parameters": {"binary_data_size": 14}}],
                struct.pack("<I", 1000) + b"x" * 10, fragment="declares 1000 bytes"),
        bytes_case("v2-bytes-too-many-files", 413, *[png] * 5, fragment="the limit is 4"),
        bytes_case("v2-bytes-oversize-element", 413, encode(noise((900, 900)), "BMP"),
                   fragment="bytes"),
        bytes_case("v2-bytes-decompression-bomb", 413,
                   encode(Image.new("1", (6000, 6000)), "PNG"), fragment="pixels"),
        bytes_case("v2-bytes-png-header-30000x30000", 413, png_file(30000, 30000),
                   fragment="pixels"),
        bytes_case("v2-bytes-not-an-image", 415, b"just some text", fragment="not an image"),
        bytes_case("v2-bytes-svg", 415,
                   b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
                   fragment="not an image"),
        bytes_case("v2-bytes-truncated-jpeg", 422, truncated(jpeg), fragment="truncated"),
        bytes_case("v2-bytes-empty-element", 400, b"", fragment="empty"),
        bytes_case("v2-bytes-good-then-bad", 415, png, b"PK\x03\x04", fragment="not an image"),
        v2_case("v2-json-bytes-not-an-image", 415, [{"name": "image_bytes", "shape": [1],
                "datatype": "BYTES", "data": ["hello"]}], fragment="not an image"),
        v2_case("v2-json-bytes-a-number", 400, [{"name": "image_bytes", "shape": [1],
                "datatype": "BYTES", "data": [7]}], fragment="JSON int"),
        # --- the model and the path
        v2_case("v2-unknown-model", 404, [binary_images()], ONE_IMAGE,
                path="/v2/models/nope/infer", fragment="unknown model 'nope'"),
        v2_case("v2-unknown-version", 404, [binary_images()], ONE_IMAGE,
                path="/v2/models/tiny/versions/7/infer", fragment="version '7'"),
        v2_case("v2-traversal-model-name", 404, [binary_images()], ONE_IMAGE,
                path="/v2/models/..%2F..%2Fetc/infer", fragment="Not Found"),
        v2_case("v2-sql-and-nul-model-name", 404, [binary_images()], ONE_IMAGE,
                path="/v2/models/%27%20OR%201=1%00/infer", fragment="unknown model"),
        v2_case("v2-unknown-endpoint", 404, body=b"{}", path="/v2/repository/index",
                fragment="Not Found"),
    ]
    # fmt: on


CORPUS = corpus() + v2_corpus()


def send(url: str, case: Case) -> httpx.Response:
    headers = {} if case.content_type is None else {"Content-Type": case.content_type}
    headers |= AUTH if case.headers is None and case.path == "/gallery" else (case.headers or {})
    return httpx.post(
        url + case.path, content=case.body, headers=headers, params=case.params, timeout=60
    )


# ------------------------------------------------------------------ the tests


@pytest.fixture(scope="module", params=["folder", "postgresql"])
def hostile_server(
    request: pytest.FixtureRequest, exported: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server on either gallery backend: the answers must not depend on it."""
    folder = tmp_path_factory.mktemp("hostile")
    gallery = folder / "gallery"
    if request.param == "postgresql":
        gallery = request.getfixturevalue("postgres").create_database("hostile")
    with serve(exported.parent.parent, gallery, api_key=API_KEY, log=folder / "server.log",
               **SMALL_LIMITS) as server:  # fmt: skip
        yield server


def test_the_corpus_is_large_and_every_case_names_one_status() -> None:
    assert len(CORPUS) >= 40
    assert len({c.name for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_request_gets_its_documented_answer(hostile_server: Server, case: Case) -> None:
    url = hostile_server.url
    before = httpx.get(f"{url}/gallery").json()["total"]
    r = send(url, case)
    assert r.status_code == case.status, r.text[:500]
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    if case.status >= 400:
        # the Open Inference Protocol's error form under /v2, the service's elsewhere
        (key,) = body.keys()
        assert key == ("error" if case.path.startswith("/v2/") else "detail"), body
        assert case.fragment in json.dumps(body[key]), body
    elif case.path == "/gallery":
        assert len(body["items"]) == 1
    elif case.path == "/predict":
        assert len(body["results"]) == case.body.count(b"--" + BOUNDARY + b"\r\n")
    elif case.path.startswith("/v2/"):  # both outputs, as JSON, a row per image
        length = int((case.headers or {}).get("Inference-Header-Content-Length", len(case.body)))
        n = json.loads(case.body[:length])["inputs"][0]["shape"][0]
        probs, fc7 = body["outputs"]
        assert (probs["name"], probs["shape"], len(probs["data"])) == ("probs", [n, 4], 4 * n)
        assert (fc7["name"], fc7["shape"], len(fc7["data"])) == ("fc7", [n, 4096], 4096 * n)
    after = httpx.get(f"{url}/gallery").json()["total"]
    assert after == before + (case.status == 201), "only a 201 adds to the gallery"
    assert httpx.get(f"{url}/health/live").status_code == 200


def test_server_stays_up_and_its_memory_bounded_through_the_refusals(
    hostile_server: Server,
) -> None:
    """Every refused case of the corpus, five rounds more: resident memory does not grow.

    Runs after the parametrized test above, which warmed the server up with every case
    (the valid images included; the soak measures memory under a long run of those).
    """
    refused = [case for case in CORPUS if case.status >= 400]
    rss = [hostile_server.rss_mib()]
    for _ in range(5):
        for case in refused:
            assert send(hostile_server.url, case).status_code == case.status, case.name
        rss.append(hostile_server.rss_mib())
    assert hostile_server.process.poll() is None
    print(f"resident memory over 5 rounds of {len(refused)} refusals: {rss} MiB")
    assert max(rss) - rss[0] < 32, f"resident memory grew: {[round(m) for m in rss]} MiB"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.parametrize("path", ["/predict", INFER])
def test_chunked_upload_is_cut_off_once_it_passes_the_request_limit(
    hostile_server: Server, path: str
) -> None:
    """A body without Content-Length that never ends gets 413 once the limit has come in.

    Without the limit the server would read (and spool) everything it is sent and answer
    only at the end, which this body never reaches.
    """
    host, port = hostile_server.url.removeprefix("http://").split(":")
    block = b"\0" * 65536
    sent, answer = 0, b""
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" % path.encode()
            + b"Content-Type: "
            + MULTIPART
            + b"\r\n\r\n"
            + _chunk(b"--" + BOUNDARY + b"\r\n" + part(b""))
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sent < 20 * MAX_REQUEST_BYTES:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(_chunk(block))
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                break  # the server stopped reading
            sent += len(block)
        sock.settimeout(10)
        while b"\r\n\r\n" not in answer or b"}" not in answer.partition(b"\r\n\r\n")[2]:
            data = sock.recv(65536)  # the headers, then the (small) JSON body
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"application/json" in head
    assert (b'{"error":' if path == INFER else b'{"detail":') in body[:100], body[:100]
    # What was sent beyond the limit sits in socket buffers, unread.
    assert MAX_REQUEST_BYTES < sent < 20 * MAX_REQUEST_BYTES
    assert httpx.get(f"{hostile_server.url}/health/live").status_code == 200


HOSTILE_IDS = [
    "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "%2F%2Fetc%2Fpasswd", "%00", "0" * 31 + "%00",
    "0" * 31 + "g", "0" * 32 + "%00", "0" * 33, "A" * 32, "%27%20OR%20%271%27%3D%271",
    "1%3BDROP%20TABLE%20items", "1%20OR%201=1", "x" * 4000, "%FF%FE", "%EF%BC%A1", "*", "%25",
    "0" * 32, "ABC",
]  # fmt: skip


@pytest.mark.parametrize("item_id", HOSTILE_IDS)
def test_hostile_ids_are_not_found_and_change_nothing(hostile_server: Server, item_id: str) -> None:
    url = hostile_server.url
    before = httpx.get(f"{url}/gallery").json()["total"]
    for method, path in [("GET", ""), ("GET", "/image"), ("GET", "/similar"), ("DELETE", "")]:
        r = httpx.request(method, f"{url}/gallery/{item_id}{path}", headers=AUTH)
        assert r.status_code == 404, (method, path, r.status_code, r.text[:200])
        assert "detail" in r.json()
    assert httpx.get(f"{url}/gallery").json()["total"] == before


@pytest.mark.parametrize(
    "params",
    [
        {"offset": "-1"},
        {"offset": str(2**63)},
        {"limit": "0"},
        {"limit": "501"},
        {"offset": "1;DROP TABLE items"},
        {"limit": "1 OR 1=1"},
    ],
)
def test_bad_page_values_are_422(hostile_server: Server, params: dict) -> None:
    r = httpx.get(f"{hostile_server.url}/gallery", params=params)
    assert r.status_code == 422, r.text[:200]


def test_mutated_images_decode_or_get_an_image_error() -> None:
    """Seeded byte flips, deletions, insertions and cuts of valid files of every accepted
    format: decode answers with an image or an ImageError (a 4xx), never anything else."""
    rgb = noise((48, 40))
    seeds = [encode(rgb, "JPEG"), encode(rgb, "JPEG", progressive=True), encode(rgb, "PNG"),
             palette_with_transparency(), animated("GIF"), animated("PNG"), animated("WEBP"),
             encode(rgb, "BMP"), encode(rgb, "TIFF", compression="tiff_lzw"),
             exif_rotated_jpeg()]  # fmt: skip
    rng = random.Random(0)
    for data in seeds:
        for _ in range(300):
            mutant = bytearray(data)
            for _ in range(rng.choice([1, 2, 4, 8, 16])):
                i, op = rng.randrange(len(mutant)), rng.random()
                if op < 0.6:
                    mutant[i] = rng.randrange(256)
                elif op < 0.8:
                    del mutant[i : i + rng.randrange(1, 8)]
                else:
                    mutant[i:i] = rng.randbytes(rng.randrange(1, 8))
            if rng.random() < 0.2:
                mutant = mutant[: rng.randrange(len(mutant))]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF and tags
                try:
                    decode(bytes(mutant), max_bytes=2_000_000, max_pixels=4_000_000)
                except ImageError:
                    pass


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("OPTIONS", "/gallery", "GET, POST"), ("PUT", f"/gallery/{'0' * 32}", "DELETE, GET"),
     ("DELETE", "/predict", "POST"), ("POST", "/health/live", "GET")],
)  # fmt: skip
def test_unsupported_methods_are_405_with_every_allowed_method(
    hostile_server: Server, method: str, path: str, allow: str
) -> None:
    r = httpx.request(method, hostile_server.url + path, headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == allow, (r.status_code, r.headers)
    assert r.json() == {"detail": "Method Not Allowed"}
