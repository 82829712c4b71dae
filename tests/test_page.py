"""The web page at ``/`` in a real browser: Chromium (Debian's package) headless, through its driver.

Upload an image and a video, watch the progress, move the split slider, download. The last
screenshot is written to ``tests/output/page.png`` (and its path printed), to look at.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Weights
from serving import Server, png, start_server
from webdriver import Browser

from testkit.clips import astronaut, make_face_clip

pytest.importorskip("fastapi")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SHOTS = Path(__file__).resolve().parent / "output"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None, reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"
)


@pytest.fixture(scope="module")
def server(weights: Weights, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("page"), weights)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None and DRIVER is not None
    b = Browser(CHROMIUM, DRIVER)
    yield b
    b.quit()


def _wait(browser: Browser, condition: str, seconds: float = 180) -> Any:
    """Poll a JavaScript expression until it is truthy (bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = browser.run(f"return {condition};")
        if value:
            return value
        time.sleep(0.2)
    status = browser.run("return document.getElementById('status').textContent;")
    raise AssertionError(f"{condition} never held; status: {status!r}")


def _download_size(browser: Browser) -> int:
    return int(
        browser.run_async(
            "const done = arguments[0];"
            "fetch(document.getElementById('download').href).then(r => r.blob()).then(b => done(b.size));"
        )
    )


@pytest.mark.slow
def test_upload_progress_slider_and_download(server: Server, browser: Browser, tmp_path: Path) -> None:
    image = tmp_path / "face.png"
    image.write_bytes(png(astronaut()[::2, ::2].copy()))
    browser.get(server.url + "/")
    assert browser.title == "vidrestore"
    browser.find("#file").send_keys(str(image))
    _wait(browser, "document.getElementById('status').textContent === 'done'")
    assert (
        _wait(
            browser,
            "document.querySelector('#compare img.after') && document.querySelector('#compare img.after').naturalWidth",
        )
        == 256
    )
    # the split slider moves the line between before and after
    browser.run("const s = document.getElementById('slider'); s.value = 20; s.dispatchEvent(new Event('input'));")
    assert "20%" in browser.find("#compare .after").css("clip-path")
    assert (browser.find("#compare .line").attribute("style") or "").endswith("left: 20%;")
    link = browser.find("#download")
    assert link.displayed and link.attribute("download") == "restored-face.png"
    assert _download_size(browser) > 10_000

    # a video: progress as it goes, then the two side by side with the slider, and the download
    video = make_face_clip(tmp_path / "call.mp4", frames=40).path
    browser.find("#file").send_keys(str(video))
    seen = _wait(browser, "document.getElementById('status').textContent.match(/frame (\\d+) of 40/)")
    assert seen
    _wait(browser, "document.getElementById('status').textContent === 'done: 40 frames'")
    assert browser.run("return document.getElementById('progress').value;") == 40
    assert _wait(browser, "document.querySelector('#compare video.after') !== null")
    assert _download_size(browser) > 10_000
    SHOTS.mkdir(exist_ok=True)
    shot = SHOTS / "page.png"
    browser.screenshot(shot)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
