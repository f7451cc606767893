"""bonemet.report: self-contained HTML (tables, embedded figures), figure helpers, real browser rendering."""

import base64
import re

import numpy as np
import pytest

from _evaluation_helpers import ct_for, lesion
from bonemet.report import Report
from bonemet.report.figures import box_strip, mask_centre, slice_overlay


def build_report():
    ref, pred = lesion(), lesion((1, 1, 0))
    rep = Report("Test <report> & co", subtitle="sub")
    rep.heading("Summary")
    rep.paragraph("Values <b>escaped</b>")
    rep.note("a note")
    rep.table([{"case": "a", "dice": 0.81234, "hd95": None, "n": 3, "ok": True},
               {"case": "b", "dice": float("nan"), "hd95": 2.5, "n": np.int64(4), "ok": False}],
              caption="Per-case metrics")
    rep.figure(slice_overlay(ct_for(ref), {"reference": ref, "prediction": pred}, (2.0, 0.8, 0.9)),
               caption="Overlay")
    rep.figure(box_strip({"g1": [0.5, 0.6, None], "g2": [0.7, 0.8]}, "Dice"), caption="Box")
    return rep


def test_report_is_self_contained(tmp_path):
    rep = build_report()
    path = rep.save(tmp_path / "r.html")
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<title>Test &lt;report&gt; &amp; co</title>" in html
    assert "<caption>Per-case metrics</caption>" in html
    assert "0.812" in html and "n/a" in html and ">4<" in html
    assert "<b>escaped</b>" not in html and "&lt;b&gt;" in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html) and "<script" not in html
    imgs = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', html)
    assert len(imgs) == 2 and all(alt for _, alt in imgs)
    for data, _ in imgs:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<style>" in html


def test_image_png_rejects_non_png():
    with pytest.raises(ValueError):
        Report("x").image_png(b"GIF89a....")


def test_mask_centre_and_empty_masks():
    m = np.zeros((10, 12, 14), np.uint8)
    assert mask_centre([m], m.shape) == (5, 6, 7)
    m[2:4, 3:5, 9:11] = 1
    assert mask_centre([m, None], m.shape) in {(z, y, x) for z in (2, 3) for y in (3, 4) for x in (9, 10)}
    fig = slice_overlay(None, {"a": m, "b": None}, (1, 1, 1), views=("axial", "coronal", "sagittal"))
    assert len(fig.axes) == 3


def test_report_renders_in_chromium(tmp_path):
    """What a reader sees: the page loads in a real browser with no broken image or error."""
    from _browser import chromium, render

    if chromium() is None:
        pytest.skip("chromium not installed (the other report tests still check the HTML)")
    path = build_report().save(tmp_path / "r.html")
    res = render(path, screenshot=tmp_path / "shot.png")
    assert res["title"] == "Test <report> & co"
    assert res["images"] == 2 and res["broken"] == 0 and res["tables"] == 1
    assert not res["errors"] and not res["console"]
    assert (tmp_path / "shot.png").stat().st_size > 10_000
