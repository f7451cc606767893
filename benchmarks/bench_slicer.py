"""Slicer side: MRML bridge throughput and the BoneMetSynth live-preview latency (slicer-core, no GUI).

    python benchmarks/bench_slicer.py [--quick]

* volume node round trip (engine array → scalar volume node → engine array) on a 512x512x400 int16 CT, against the
  bare ``slicer.util.updateVolumeFromArray`` + ``arrayFromVolume`` copy a script would write;
* femur label map (2 labels) → segmentation node → masks, on the same grid;
* writing the segmentation as ``.seg.nrrd`` (Slicer's storage node) vs a plain label-map NRRD with SimpleITK;
* BoneMetSynth live preview: one slider change (placement on the lesion's neighbourhood + preview node update) on a
  200x200x400 femur crop, against recomputing the placement on the whole crop (``place_lesion`` directly).

Writes ``benchmarks/results/slicer.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path[:0] = [str(ROOT / "BoneMetSeg"), str(ROOT / "BoneMetSynth")]

import slicer  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from bonemet import io as bio  # noqa: E402
from bonemet import mrml  # noqa: E402
from bonemet.io import Geometry, Volume  # noqa: E402
from _machine import machine  # noqa: E402


def timeit(fn, repeat=3):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def femur_crop(shape, sp=0.85, seed=0):
    r = np.random.default_rng(seed)
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    dist = np.sqrt(((y - shape[1] / 2) * sp) ** 2 + ((x - shape[2] / 2) * sp) ** 2)
    femur = np.broadcast_to(dist <= 24.0, shape).astype(np.uint8)
    ct = np.where(femur, 250, 40).astype(np.int16)
    ct[np.broadcast_to((dist > 21) & (dist <= 24), shape)] = 1300
    ct = (ct + r.normal(0, 30, shape)).astype(np.int16)
    return ct, femur


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller volumes (smoke run)")
    args = ap.parse_args(argv)
    big = (100, 256, 256) if args.quick else (400, 512, 512)
    rows, data = [], {"machine": machine(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    scene = slicer.vtkMRMLScene()

    # 1. volume round trip
    g = Geometry(big[::-1], (0.78, 0.78, 1.0), (-200.0, -180.0, 50.0))
    ct = np.random.default_rng(0).integers(-1000, 2000, size=big, dtype=np.int16)
    node = mrml.volume_to_node(ct, g, scene=scene, name="CT")

    def ours():
        mrml.volume_to_node(Volume(ct, g), node=node)
        v = mrml.node_to_volume(node)
        return v.array[0, 0, 0]  # keep nothing alive between repeats (same allocation pattern as the peer)

    def peer():
        slicer.util.updateVolumeFromArray(node, ct)
        a = np.array(slicer.util.arrayFromVolume(node), copy=True)
        return a[0, 0, 0]

    back = mrml.node_to_volume(node)
    assert np.array_equal(back.array, ct) and back.geometry.same_grid(g)
    del back
    peer(), ours()  # warm-up
    t_ours, _ = timeit(ours, repeat=5)
    t_peer, _ = timeit(peer, repeat=5)
    mb = ct.nbytes / 2 ** 20
    rows.append((f"volume node round trip {big[2]}x{big[1]}x{big[0]} int16 ({mb:.0f} MiB), geometry included",
                 f"{t_ours * 1e3:.0f} ms", f"bare slicer.util copy: {t_peer * 1e3:.0f} ms ({t_ours / t_peer:.2f}x)"))
    data["volume_roundtrip_s"] = t_ours
    data["volume_roundtrip_peer_s"] = t_peer

    # 2. femur label map -> segmentation -> masks
    z, y, x = np.ogrid[:big[0], :big[1], :big[2]]
    lab = np.zeros(big, np.uint8)
    r2l = (y - big[1] / 2) ** 2 + (x - big[2] / 4) ** 2
    r2r = (y - big[1] / 2) ** 2 + (x - 3 * big[2] / 4) ** 2
    lab[np.broadcast_to(r2l < (big[2] / 10) ** 2, big)] = 1
    lab[np.broadcast_to(r2r < (big[2] / 10) ** 2, big)] = 2
    t_imp, seg = timeit(lambda: mrml.segmentation_from_labelmap(lab, g, mrml.FEMUR_LABELS, scene=scene), repeat=1)
    t_exp, masks = timeit(lambda: mrml.segment_masks(seg, geometry=g), repeat=1)
    assert np.array_equal(masks["Femur left"], (lab == 2).astype(np.uint8))
    rows.append(("femur label map → segmentation node (2 segments)", f"{t_imp * 1e3:.0f} ms", ""))
    rows.append(("segmentation node → binary masks on the CT grid (2 segments)", f"{t_exp * 1e3:.0f} ms", ""))
    data.update(labelmap_to_segmentation_s=t_imp, segmentation_to_masks_s=t_exp)

    # 3. .seg.nrrd
    with tempfile.TemporaryDirectory() as tmp:
        t_seg, path = timeit(lambda: mrml.save_segmentation(seg, Path(tmp) / "f.seg.nrrd"), repeat=1)
        t_crop, _ = timeit(lambda: mrml.save_segmentation(seg, Path(tmp) / "c.seg.nrrd", crop=True), repeat=1)
        t_plain, _ = timeit(lambda: sitk.WriteImage(bio.to_image(lab, g), str(Path(tmp) / "f.nrrd"), True), repeat=1)
        import slicerio

        t_read, s = timeit(lambda: slicerio.read_segmentation(str(path)), repeat=1)
        assert [x["name"] for x in s["segments"]] == ["Femur right", "Femur left"]
    rows.append(("save .seg.nrrd, cropped to the segments (crop=True)", f"{t_crop * 1e3:.0f} ms", ""))
    rows.append(("save .seg.nrrd on the whole CT grid (Slicer storage node, names/colours/geometry)",
                 f"{t_seg * 1e3:.0f} ms",
                 f"plain label-map NRRD with SimpleITK: {t_plain * 1e3:.0f} ms; slicerio read-back: "
                 f"{t_read * 1e3:.0f} ms"))
    data.update(save_seg_nrrd_s=t_seg, save_seg_nrrd_cropped_s=t_crop, save_plain_nrrd_s=t_plain, slicerio_read_s=t_read)
    scene.Clear(0)

    # 4. live preview
    from bonemet.synthesis.placement import place_lesion
    from BoneMetSynthLib.Logic import BoneMetSynthLogic, PlacementParameters

    shape = (200, 100, 100) if args.quick else (400, 200, 200)
    fct, fem = femur_crop(shape)
    gg = Geometry(shape[::-1], (0.85, 0.85, 0.85))
    les = np.zeros(shape, np.uint8)
    zz, yy, xx = np.indices(shape, sparse=True)
    c = np.array(shape) // 2
    les[((zz - c[0]) ** 2 + (yy - c[1] - 8) ** 2 + (xx - c[2]) ** 2) <= 64] = 1
    fct[les > 0] = 30
    ctNode = mrml.volume_to_node(fct, gg, scene=scene, name="femur")
    segNode = mrml.segmentation_from_labelmap(fem, gg, {1: mrml.FEMUR_RIGHT}, scene=scene, reference_node=ctNode)
    mrml.set_segment_mask(segNode, les, gg, mrml.METASTASIS)
    logic = BoneMetSynthLogic(scene=scene)
    item = logic.extractFromVolume(ctNode, segNode)[0]
    point = mrml.ijk_to_ras_point(gg, (c[2], c[1] - 10, c[0] - 60))
    logic.updatePreview(ctNode, segNode, item.id, point, PlacementParameters())  # caches CT and femur
    scales = iter(np.linspace(0.8, 1.4, 50))
    t_prev, info = timeit(lambda: logic.updatePreview(ctNode, segNode, item.id, point,
                                                      PlacementParameters(scale=float(next(scales)), noise_hu=10)),
                          repeat=7)
    vol = logic.ctArray(ctNode)
    femur_map = logic.femurLabelmap(segNode, gg)
    t_full, _ = timeit(lambda: place_lesion(vol.array, femur_map, gg, item, point, space="ras", scale=1.1,
                                            noise_hu=10), repeat=3)
    rows.append((f"live preview, one slider change, femur crop {shape[2]}x{shape[1]}x{shape[0]} "
                 f"(lesion {item.volume_mm3:.0f} mm³)", f"{t_prev * 1e3:.0f} ms",
                 f"place_lesion on the whole crop: {t_full * 1e3:.0f} ms = {t_full / t_prev:.1f}x the preview time; the preview also updates the preview volume and segment nodes"))
    data.update(live_preview_s=t_prev, place_lesion_whole_crop_s=t_full)

    md = ["## Slicer modules (MRML bridge, live preview)", "",
          f"Machine: {data['machine']}; {data['date']}. slicer-core (real MRML, no GUI); shared machine.", "",
          "| what | time | peer / note |", "|---|---|---|"]
    md += [f"| {a} | {b} | {c_} |" for a, b, c_ in rows]
    md += ["", "Target: live preview well under 1 s per change — measured "
           f"{t_prev * 1e3:.0f} ms. The bridge adds geometry handling on top of the bare array copy."]
    text = "\n".join(md) + "\n"
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "slicer.json").write_text(json.dumps(data, indent=2) + "\n")
        (RESULTS / "slicer.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
