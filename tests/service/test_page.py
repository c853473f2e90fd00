"""The web page at `/`, driven in headless Chromium against a real server on loopback.

Needs Debian's chromium (`/usr/bin/chromium`, installed by `.ci/run`) and the `playwright`
Python package (dev extra), which drives it without downloading a browser of its own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.service.conftest import running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):  # CI installs it: a missing browser there is a failure
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run should have installed chromium")
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def page_store(trained_run: Path, synth_root: Path, tmp_path_factory) -> Path:
    """The session's run exported as `alexnet export --data` does: tiny:1 with its validation
    figures (one and ten crops) and both pictures (conv1's kernels, the training curves)."""
    from training.export import export_run

    store_dir = tmp_path_factory.mktemp("page-store")
    export_run(trained_run / "checkpoint.pt", store_dir=store_dir, name="tiny", data=synth_root,
               workers=0, progress=False)  # fmt: skip
    return store_dir


@pytest.fixture(scope="module")
def page_server(page_store: Path, sample_images, tmp_path_factory) -> Iterator[str]:
    """A server whose gallery holds the validation images, labelled by class."""
    gallery = tmp_path_factory.mktemp("page") / "gallery"
    with running_server(page_store, gallery) as url:
        for label, data in sample_images:
            r = httpx.post(
                f"{url}/gallery", files=[("image", ("x", data))], data={"label": label}, timeout=60
            )
            assert r.status_code == 201, r.text
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, page_server: str):
    """A fresh page on `/`, recording every URL it requests."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    page.goto(page_server + "/")
    yield page
    context.close()


def _shown_predictions(page) -> list[tuple[str, str]]:
    page.wait_for_selector("#predictions li.prediction")
    return [
        (li.query_selector(".label").inner_text(), li.query_selector(".probability").inner_text())
        for li in page.query_selector_all("#predictions li.prediction")
    ]


def _shown_neighbors(page) -> list[tuple[str, str]]:
    page.wait_for_selector("#neighbors .neighbor")
    return [
        (n.query_selector(".label").inner_text(), n.query_selector(".distance").inner_text())
        for n in page.query_selector_all("#neighbors .neighbor")
    ]


def test_upload_shows_the_apis_top5_and_neighbours(
    page, page_server: str, sample_images, tmp_path: Path
) -> None:
    label, data = sample_images[-1]
    path = tmp_path / "query.png"
    path.write_bytes(data)
    page.wait_for_selector("#samples .sample")  # the model is loaded
    page.set_input_files("#file", str(path))

    api = httpx.post(f"{page_server}/predict", files=[("image", ("q", data))], timeout=60)
    expected = [
        (p["label"], f"{100 * p['probability']:.1f}%")
        for p in api.json()["results"][0]["predictions"]
    ]
    assert _shown_predictions(page) == expected
    widths = page.eval_on_selector_all(
        "#predictions .bar > div", "els => els.map(e => parseFloat(e.style.width))"
    )
    assert widths == sorted(widths, reverse=True) and 0 < widths[0] <= 100

    similar = httpx.post(
        f"{page_server}/similar", files=[("image", ("q", data))], params={"k": 8}, timeout=60
    ).json()["neighbors"]
    shown = _shown_neighbors(page)
    assert shown == [(n["label"], f"distance {n['distance']:.2f}") for n in similar]
    # the query image is itself in the gallery: the nearest neighbour is that image
    assert shown[0] == (label, "distance 0.00")
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)


def test_model_figures_and_offline(page, page_server: str) -> None:
    page.wait_for_selector("#figures tr")
    assert "tiny:1" in page.inner_text("#model-line")
    table = page.inner_text("#figures")
    for label in httpx.get(f"{page_server}/models").json()["loaded"]["labels"]:
        assert label in table
    page.wait_for_selector("#samples .sample")
    page.wait_for_load_state("networkidle")
    # the model's pictures (filters.png from the export) are shown, and really decoded
    widths = page.eval_on_selector_all("#pictures img", "els => els.map(e => e.naturalWidth)")
    assert len(widths) == len(httpx.get(f"{page_server}/models").json()["loaded"]["pictures"]) > 0
    assert all(w > 0 for w in widths)
    origin = urlsplit(page_server).netloc
    outside = [u for u in page.requested if urlsplit(u).netloc not in (origin, "")]
    assert outside == [], "the page must work offline (no CDN)"


def test_picking_a_sample_finds_itself(page, page_server: str, sample_images) -> None:
    page.wait_for_selector("#samples .sample")
    shown = [s.inner_text().strip() for s in page.query_selector_all("#samples .sample")]
    assert len(shown) == min(24, len(sample_images))
    assert set(shown) == {label for label, _ in sample_images}  # every class is offered
    first = page.query_selector("#samples .sample")
    label = first.inner_text().strip()
    first.click()
    assert _shown_neighbors(page)[0] == (label, "distance 0.00")
    assert len(_shown_predictions(page)) == 4  # every class of the 4-class model


def test_errors_are_said_in_plain_words(page, tmp_path: Path) -> None:
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is text, not a picture\n")
    page.wait_for_selector("#samples .sample")
    page.set_input_files("#file", str(fake))
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.inner_text("#error")
    assert page.query_selector_all("#predictions li.prediction") == []


def test_docs_render_with_the_network_cut(browser, page_server: str) -> None:
    """/docs (Swagger UI) lists the operations when nothing but this server can be reached:
    every request to another host is aborted, as on a machine without internet."""
    origin = urlsplit(page_server).netloc
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    cut: list[str] = []

    def only_loopback(route) -> None:
        if urlsplit(route.request.url).netloc in (origin, ""):
            route.continue_()
        else:
            cut.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.goto(page_server + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = {e.inner_text().strip() for e in page.query_selector_all(".opblock-summary-path")}
    schema = httpx.get(f"{page_server}/openapi.json").json()
    assert {"/predict", "/similar", "/gallery", "/gallery/{item_id}"} <= paths
    assert paths == set(schema["paths"])  # every operation of the schema is shown
    assert page.inner_text(".info .title").startswith(schema["info"]["title"])
    assert cut == [], f"/docs asked for outside resources: {cut}"
    context.close()


def test_heading_says_how_many_labels_of_how_many_classes(page, page_server: str) -> None:
    """A 4-class model: the heading says "Top 4 of 4 classes", the four are listed, and the
    figures give no top-5 error (every class is in the top five)."""
    n = httpx.get(f"{page_server}/models").json()["loaded"]["num_classes"]
    page.wait_for_selector("#samples .sample")
    assert page.inner_text("#predictions-heading") == f"Top {min(5, n)} of {n} classes"
    page.query_selector("#samples .sample").click()
    assert len(_shown_predictions(page)) == min(5, n)
    metrics = httpx.get(f"{page_server}/models").json()["loaded"]["metrics"]
    figures = page.inner_text("#figures")
    for protocol, title in (("single_crop", "one centre crop"), ("ten_crop", "ten crops")):
        assert metrics[protocol]["top5_err"] is None  # not 0: every class is in the top five
        assert f"val error, {title}\ttop-1 {100 * metrics[protocol]['top1_err']:.1f}%" in figures
    assert "top-5" not in figures


def test_model_pictures_keep_their_proportions(page, page_server: str, tmp_path: Path) -> None:
    """Each picture of the model (conv1's kernels, the curves) is drawn at the width / height
    ratio of its PNG, whatever the width of the window; where it fits, at its own size (a
    resampled kernel grid gives kernels of unequal sizes)."""
    from PIL import Image

    pictures = httpx.get(f"{page_server}/models").json()["loaded"]["pictures"]
    assert set(pictures) == {"filters", "curves"}
    for width in (1200, 700, 380):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_selector("#pictures img")
        page.wait_for_load_state("networkidle")
        for url in pictures.values():
            png = tmp_path / "picture.png"
            png.write_bytes(httpx.get(f"{page_server}{url}").content)
            with Image.open(png) as img:
                want = img.width / img.height
            box = page.eval_on_selector(
                f'#pictures img[src="{url}"]',
                "e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; }",
            )
            assert box[0] > 0 and box[0] / box[1] == pytest.approx(want, rel=0.02), (width, box)
            assert box[0] <= width  # and it fits the window
            if url.endswith("/filters") and img.width < width - 100:
                assert box == [img.width, img.height]  # 1:1, every kernel the same size


def test_the_header_says_what_the_model_knows(page, page_server: str) -> None:
    loaded = httpx.get(f"{page_server}/models").json()["loaded"]
    page.wait_for_function("document.querySelector('#model-line').textContent !== ''")
    assert page.inner_text("#model-knows") == (
        f"This model knows {len(loaded['labels'])} classes: {', '.join(loaded['labels'])}."
    )
    assert page.is_hidden("#model-hint")  # no hint: the session's model is not the default
