"""The synthesis part of ``bonemet demo``: library from the lesioned phantoms, synthetic set from the healthy
ones, preview montage. One call, for the demo command and the Slicer module's "try it" button."""

from __future__ import annotations

import os
from pathlib import Path

from bonemet.synthesis.batch import synthesize
from bonemet.synthesis.library import extract_library, load_library
from bonemet.synthesis.preview import save_preview_montage


def run_synthesis_demo(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike, spacing: float = 2.0,
                       per_pair: int = 2, seed: int = 0, workers: int = 1, max_cases: int | None = None,
                       preview_n: int = 4, exclude_sources=(), preset="small") -> dict:
    """Extract ``OUT/lesion-library`` from the lesioned cases of ``dataset_dir``, synthesise ``OUT/synthetic``
    from its healthy cases (synthesis ``preset``, default 'small'; ``per_pair`` applications), save
    ``OUT/synthetic-preview.png``.

    ``spacing``: working grid in mm (the demo phantoms are ~2 mm; the paper uses 0.85). Resumable (the
    synthesis step). Returns paths and the synthesis summary.
    """
    out = Path(out_dir)
    lib_dir = extract_library(dataset_dir, out / "lesion-library", spacing=spacing)
    lib = load_library(lib_dir)
    summary = synthesize(lib_dir, dataset_dir, out / "synthetic", per_pair=per_pair, seed=seed, workers=workers,
                         preset=preset, max_cases=max_cases, spacing=spacing, exclude_sources=exclude_sources)
    preview = None
    if summary["kept"]:
        preview = str(save_preview_montage(out / "synthetic", lib, out / "synthetic-preview.png", n=preview_n))
    return {"library": str(lib_dir), "n_lesions": len(lib), "lesion_sources": lib.sources(),
            "synthetic": str(out / "synthetic"), "summary": summary, "preview": preview}
