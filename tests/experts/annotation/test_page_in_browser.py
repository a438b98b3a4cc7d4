"""The page in a real headless browser: load a case, place a click, see the overlay change, save,
and find the label on disk, valid, with the image's affine. Screenshots at each step go to
``tmp_path/screenshots`` (and to ``$EXPERTSEG_SCREENSHOTS`` when set).

Skipped where no Chromium is installed (``apt-get install -y chromium``), unless
``EXPERTSEG_REQUIRE_BROWSER=1`` (CI) turns the skip into a failure."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from cdp import Browser, find_browser
from experts.annotation.server import make_server, page_url
from experts.annotation.service import AnnotationService
from experts.data.manifest import scan_dataset
from experts.data.nifti import load_volume
from toydata import make_toy_dataset


@pytest.fixture
def browser(tmp_path):
    binary = find_browser()
    if binary is None:
        reason = "no Chromium installed (apt-get install -y chromium); the page is not tested in a browser"
        if os.environ.get("EXPERTSEG_REQUIRE_BROWSER") == "1":
            pytest.fail(f"EXPERTSEG_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    b = Browser(binary, tmp_path / "profile")
    yield b
    b.close()


@pytest.fixture
def page(tmp_path, toy_model):
    data = make_toy_dataset(tmp_path / "Demo", n_train=2, n_test=1, shape=(32, 32, 24))
    service = AnnotationService(toy_model, data, "drme", learn_steps=2)
    server = make_server(service, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield service, data, page_url(server, service.token)
    server.shutdown()
    server.server_close()


def shoot(browser, tmp_path, name) -> Path:
    path = browser.screenshot(tmp_path / "screenshots" / f"{name}.png")
    extra = os.environ.get("EXPERTSEG_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


READY = "document.body.dataset.state === 'ready' && window.expertseg.busy === 0 && !!window.expertseg.case && !!window.expertseg.mask"


def test_click_changes_the_overlay_and_save_writes_the_label_with_the_images_affine(browser, page, tmp_path):
    service, data, url = page
    browser.call("Page.enable")
    browser.call("Page.navigate", url=url)
    browser.wait_for(READY)
    assert browser.evaluate("document.body.dataset.case") == "case00"
    shoot(browser, tmp_path, "1-loaded")
    before = int(browser.evaluate("document.body.dataset.maskVoxels"))

    browser.evaluate("document.querySelector('input[name=tool][value=\"click+\"]').click()")
    # a voxel of the current mask on the axial slice shown: a click on an object edits it (the toy network's answer is arbitrary)
    on = browser.evaluate("(() => { const S = window.expertseg, [X, Y] = S.shape, z = S.cross[2]; "
                          "for (let y = 0; y < Y; y++) for (let x = 0; x < X; x++) if (S.mask[x + X * (y + Y * z)]) return [x, y, z]; return null; })()")
    assert on is not None, "the starting mask is empty on the axial slice shown"
    x, y = browser.evaluate(f"window.expertseg.screenOf('axial', {on})")
    browser.click(x, y)
    browser.wait_for("window.expertseg.lastAnswer !== null && window.expertseg.busy === 0")
    after = int(browser.evaluate("document.body.dataset.maskVoxels"))
    assert after != before, "the overlay did not change after the click"
    assert "in progress" in browser.evaluate("document.querySelector('#cases tr.current').textContent")
    shoot(browser, tmp_path, "2-after-click")

    rect = browser.evaluate("(() => { const r = document.getElementById('save').getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    browser.click(*rect)
    saved = browser.wait_for("document.body.dataset.saved")
    browser.wait_for("window.expertseg.busy === 0")
    shoot(browser, tmp_path, "3-saved")

    assert saved == "labelsTr/drme/case00.nii.gz"
    label = load_volume(data / saved, kind="label")
    image = load_volume(data / "imagesTr" / "case00_0000.nii.gz")
    assert np.allclose(label.affine, image.affine) and label.array.shape == image.array.shape
    assert int((label.array > 0).sum()) == int(browser.evaluate("document.body.dataset.maskVoxels"))  # the page shows what was saved
    assert [lf.case for lf in scan_dataset(data).labels_of(expert="drme")] == ["case00"]
    assert "saved" in browser.evaluate("document.querySelector('#cases tr.current').textContent")
