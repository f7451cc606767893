"""Build the packaged anatomical bases of the phantoms (run once by developers; users never need it).

    python -m bonemet.phantom.build_atlas SOURCE_DIR [OUT_DIR]

SOURCE_DIR holds the MIT-licensed ``Pelvic-Ref-00N/label.mhd`` label maps of yuta-hi/pelvic-annonation
(0 background, 1 pelvis, 2 femurs, 3 sacrum, 4 spine, 5..28 muscles; 1 x 1 x 3 mm). Each is cropped to the
hip region (from the lowest slice to 60 mm above the femoral heads, body bounding box in-plane) and relabelled
to the phantom's tissue codes (:data:`LABELS`), then written as ``OUT_DIR/<case>.nrrd`` (uint8, gzip).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

LABELS = {"background": 0, "other_bone": 1, "femur_right": 2, "femur_left": 3, "muscle": 4}
ABOVE_HEAD_MM = 60.0


def build_one(src: Path, out: Path) -> Path:
    img = sitk.ReadImage(str(src))
    a = sitk.GetArrayFromImage(img)
    sp = img.GetSpacing()
    dz = sp[2]
    femur = a == 2
    zf = np.flatnonzero(femur.any(axis=(1, 2)))
    # The label's axis 0 runs inferior -> superior (identity direction, LPS): keep slices 0..head top + margin.
    z1 = min(a.shape[0], int(zf.max()) + 1 + int(round(ABOVE_HEAD_MM / dz)))
    a = a[:z1]
    femur = femur[:z1]
    body = a > 0
    ys = np.flatnonzero(body.any(axis=(0, 2)))
    xs = np.flatnonzero(body.any(axis=(0, 1)))
    y0, y1 = max(0, ys[0] - 2), min(a.shape[1], ys[-1] + 3)
    x0, x1 = max(0, xs[0] - 2), min(a.shape[2], xs[-1] + 3)
    a = a[:, y0:y1, x0:x1]
    femur = femur[:, y0:y1, x0:x1]
    out_a = np.zeros(a.shape, np.uint8)
    out_a[np.isin(a, (1, 3, 4))] = LABELS["other_bone"]
    out_a[a >= 5] = LABELS["muscle"]
    # Split the two femurs: connected components, the one at smaller LPS x is the patient's right femur.
    lab, n = ndi.label(femur)
    sizes = ndi.sum(femur, lab, range(1, n + 1))
    keep = np.argsort(sizes)[::-1][:2] + 1
    cx = [np.nonzero(lab == k)[2].mean() for k in keep]
    right, left = (keep[0], keep[1]) if cx[0] < cx[1] else (keep[1], keep[0])
    out_a[lab == right] = LABELS["femur_right"]
    out_a[lab == left] = LABELS["femur_left"]
    res = sitk.GetImageFromArray(out_a)
    res.SetSpacing(sp)
    res.SetDirection(img.GetDirection())
    res.SetOrigin(img.TransformIndexToPhysicalPoint((int(x0), int(y0), 0)))
    out.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(res, str(out), True)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    src = Path(argv[0])
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "data" / "femur_labels"
    for d in sorted(src.glob("Pelvic-Ref-*")):
        p = build_one(d / "label.mhd", out / f"{d.name}.nrrd")
        print(p, p.stat().st_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
