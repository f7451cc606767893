"""Ad-hoc lesion synthesis (SPEC.md): lesion library, lesion transform, insertion, batch synthesis and the
interactive placement API.

* :mod:`bonemet.synthesis.library` — ``extract_library``, ``load_library``, ``LesionItem``, ``Library``;
* :mod:`bonemet.synthesis.transform` — ellipsoid crop, rotation/scaling, edge smoothing, noise;
* :mod:`bonemet.synthesis.insertion` — insertion into a femur, size filter;
* :mod:`bonemet.synthesis.batch` — ``synthesize`` (resumable, parallel), ``regenerate_case``;
* :mod:`bonemet.synthesis.placement` — ``place_lesion`` (live preview in Slicer);
* :mod:`bonemet.synthesis.preview` — ``save_preview_montage``.
"""
