"""The annotation API without a browser: load, interact, undo, save, learn; bad requests get one
clear line and leave the dataset valid."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from experts.annotation.service import AnnotationService
from experts.data.manifest import scan_dataset
from experts.data.nifti import load_volume


def call(service, method, path, body=None, *, token=None, **query):
    raw = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    r = service.handle(method, path, query=query, body=raw if method == "POST" else b"", token=service.token if token is None else token)
    return r.status, (json.loads(r.body) if r.content_type == "application/json" else r)


@pytest.fixture
def service(toy_model, small_dataset):
    return AnnotationService(toy_model, small_dataset, "drme", learn_steps=2)


def test_a_click_changes_the_mask_and_undo_brings_it_back(service):
    status, info = call(service, "POST", "/api/load", {"case": "case00", "class": "core", "start": "small"})
    assert status == 200 and info["shape"] == [20, 20, 20] and info["start"] == "small"
    _, before = call(service, "GET", "/api/mask", case="case00")
    before = np.frombuffer(before.body, np.uint8).copy()
    on = [int(i) for i in np.argwhere(before.reshape(20, 20, 20, order="F"))[0]]  # x fastest; a click on the current mask edits the object there
    status, out = call(service, "POST", "/api/interact", {"case": "case00", "class": "core", "tool": "click", "points": [on]})
    assert status == 200 and out["step"] == 1 and out["can_undo"]
    _, after = call(service, "GET", "/api/mask", case="case00")
    assert not np.array_equal(np.frombuffer(after.body, np.uint8), before)
    assert call(service, "GET", "/api/cases")[1]["cases"][0] == {"case": "case00", "split": "train", "state": "in progress"}
    call(service, "POST", "/api/undo", {"case": "case00", "class": "core"})
    _, back = call(service, "GET", "/api/mask", case="case00")
    assert np.array_equal(np.frombuffer(back.body, np.uint8), before)


@pytest.mark.parametrize("tool, body", [
    ("scribble", {"points": [[5, 5, 10], [12, 9, 10]], "positive": False}),
    ("box", {"points": [[4, 4, 10], [15, 15, 10]]}),
    ("erase", {"points": [[10, 10, 10], [12, 10, 10]], "radius_mm": 4.0}),
])
def test_every_tool_answers(service, tool, body):
    call(service, "POST", "/api/load", {"case": "case01", "start": "medium"})
    status, out = call(service, "POST", "/api/interact", {"case": "case01", "class": "core", "tool": tool, **body})
    assert status == 200, out
    assert out["interactions"] == 1


def test_save_writes_a_valid_dense_label_with_the_images_affine_and_a_log(service, small_dataset):
    call(service, "POST", "/api/load", {"case": "case00", "start": "small"})
    call(service, "POST", "/api/interact", {"case": "case00", "class": "rim", "tool": "click", "points": [[10, 10, 10]]})
    status, out = call(service, "POST", "/api/save", {"case": "case00", "mode": "dense"})
    assert status == 200 and out["saved"] == "labelsTr/drme/case00.nii.gz"
    vol = load_volume(small_dataset / out["saved"], kind="label")
    image = load_volume(small_dataset / "imagesTr" / "case00_0000.nii.gz")
    assert np.allclose(vol.affine, image.affine) and vol.array.shape == (20, 20, 20) and set(np.unique(vol.array)) <= {0, 1, 2}
    log = json.loads((small_dataset / out["log"]).read_text())
    entry = log["saves"][-1]
    assert entry["who"] and entry["when"] and entry["start_expert"] == "small" and entry["mode"] == "dense"
    assert entry["interactions"][0]["type"] == "click" and len(entry["interactions"][0]["world"][0]) == 3
    manifest = scan_dataset(small_dataset)  # the log folder is not taken for labels; drme is declared as new
    assert "drme" in manifest.new_experts and [lf.case for lf in manifest.labels_of(expert="drme")] == ["case00"]
    assert call(service, "GET", "/api/cases")[1]["cases"][0]["state"] == "saved"


def test_a_partial_save_keeps_only_the_corrected_crops(service, small_dataset):
    call(service, "POST", "/api/load", {"case": "case02", "start": "small"})
    assert call(service, "POST", "/api/save", {"case": "case02", "mode": "partial"})[0] == 400  # nothing corrected yet
    call(service, "POST", "/api/interact", {"case": "case02", "class": "core", "tool": "click", "points": [[2, 2, 2]]})
    assert call(service, "POST", "/api/save", {"case": "case02", "mode": "partial"})[0] == 200
    label = load_volume(small_dataset / "labelsTr" / "drme" / "case02.nii.gz", kind="label").array
    assert (label == 3).any() and (label != 3).any() and label[19, 19, 19] == 3  # the far corner is outside the 16^3 crop
    assert scan_dataset(small_dataset).label("case02", "drme").kind == "partial"


@pytest.mark.parametrize("method, path, body, query, status, words", [
    ("POST", "/api/load", {"case": "nosuch"}, {}, 404, "no case"),
    ("POST", "/api/load", {"case": "../../etc/passwd"}, {}, 404, "no case"),
    ("GET", "/api/volume", None, {"case": "/etc/passwd"}, 404, "no case"),
    ("POST", "/api/interact", {"case": "case00", "tool": "click", "points": [[30, 0, 0]]}, {}, 400, "outside the image"),
    ("POST", "/api/interact", {"case": "case00", "tool": "click", "points": [[1, 2]]}, {}, 400, "triples"),
    ("POST", "/api/interact", {"case": "case00", "tool": "laser", "points": [[1, 2, 3]]}, {}, 400, "tool must be"),
    ("POST", "/api/interact", {"case": "case00", "class": "liver", "tool": "click", "points": [[1, 2, 3]]}, {}, 400, "not a structure"),
    ("POST", "/api/interact", {"case": "case00", "tool": "erase", "points": [[1, 2, 3]], "radius_mm": -1}, {}, 400, "radius_mm"),
    ("POST", "/api/interact", b"{not json", {}, 400, "not JSON"),
    ("POST", "/api/interact", b"[1, 2]", {}, 400, "JSON object"),
    ("POST", "/api/save", {"case": "case00", "mode": "sloppy"}, {}, 400, "mode must be"),
    ("GET", "/api/files", None, {}, 404, "no API call"),
])
def test_bad_requests_get_one_clear_line_and_the_dataset_stays_valid(service, small_dataset, method, path, body, query, status, words):
    call(service, "POST", "/api/load", {"case": "case00"})
    got, out = call(service, method, path, body, **query)
    assert got == status and words in out["error"] and "\n" not in out["error"]
    scan_dataset(small_dataset)


def test_every_call_needs_the_token(service):
    assert call(service, "GET", "/api/status", token="wrong")[0] == 403
    assert service.handle("GET", "/api/status", token=None).status == 403
    assert call(service, "GET", "/api/status")[0] == 200


def test_a_second_save_racing_the_first_is_refused_and_the_dataset_stays_valid(service, small_dataset, monkeypatch):
    call(service, "POST", "/api/load", {"case": "case00", "start": "small"})
    call(service, "POST", "/api/load", {"case": "case01", "start": "small"})
    entered, release = threading.Event(), threading.Event()
    real = service.store.save

    def slow(*args, **kwargs):
        entered.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(service.store, "save", slow)
    first = {}
    worker = threading.Thread(target=lambda: first.update(r=call(service, "POST", "/api/save", {"case": "case00"})))
    worker.start()
    assert entered.wait(10)
    status, out = call(service, "POST", "/api/save", {"case": "case01"})
    release.set()
    worker.join(10)
    assert status == 409 and "in progress" in out["error"]
    assert first["r"][0] == 200
    manifest = scan_dataset(small_dataset)
    assert [lf.case for lf in manifest.labels_of(expert="drme")] == ["case00"]


def test_a_save_from_another_process_holding_the_lock_is_refused(service, small_dataset):
    call(service, "POST", "/api/load", {"case": "case00"})
    (small_dataset / "annotations").mkdir()
    (small_dataset / "annotations" / ".lock").write_text("12345\n")
    status, out = call(service, "POST", "/api/save", {"case": "case00"})
    assert status == 409 and "another save" in out["error"]
    assert not (small_dataset / "labelsTr" / "drme").exists()
    scan_dataset(small_dataset)


def test_an_experts_label_from_elsewhere_is_never_replaced(toy_model, small_dataset):
    service = AnnotationService(toy_model, small_dataset, "large")  # 'large' labelled every case already
    before = (small_dataset / "labelsTr" / "large" / "case00.nii.gz").read_bytes()
    call(service, "POST", "/api/load", {"case": "case00"})
    assert call(service, "GET", "/api/cases")[1]["cases"][0]["state"] == "locked"
    status, out = call(service, "POST", "/api/save", {"case": "case00"})
    assert status == 409 and "did not write" in out["error"]
    assert (small_dataset / "labelsTr" / "large" / "case00.nii.gz").read_bytes() == before


def test_learn_my_style_adds_the_doctors_row_and_the_page_switches_to_it(service, tmp_path):
    from experts.bundle import load_bundle

    service.out = tmp_path / "learned"
    assert call(service, "POST", "/api/adapt")[0] == 400  # nothing saved yet
    call(service, "POST", "/api/load", {"case": "case00", "start": "small"})
    call(service, "POST", "/api/save", {"case": "case00"})
    status, out = call(service, "POST", "/api/adapt")
    assert status == 200 and out["cases"] == ["case00"]
    done = service.wait(120)
    assert done["state"] == "done", done
    st = call(service, "GET", "/api/status")[1]
    assert st["has_own_row"] and "drme" in st["experts"] and st["version"] == 1
    assert call(service, "POST", "/api/load", {"case": "case01"})[1]["start"] == "drme"
    assert load_bundle(tmp_path / "learned" / "model").experts == ["small", "medium", "drme"]  # the learned model, saved
    call(service, "POST", "/api/load", {"case": "case01"})
    call(service, "POST", "/api/save", {"case": "case01"})
    call(service, "POST", "/api/adapt")  # a second round learns from both saves, from the page's starting model
    done = service.wait(120)
    info = done["info"]
    assert "left-out case" in done["message"]
    assert info["how"] == "fit" and info["cases"] == ["case00", "case01"] and set(info["left_out_scores"]) == {0, 1, 2}
    assert info["steps"] == max(info["left_out_scores"], key=lambda k: (info["left_out_scores"][k], -k))  # the best left-out step, 0 included
