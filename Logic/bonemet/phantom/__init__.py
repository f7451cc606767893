"""Realistic CT phantoms of the proximal femurs with ground truth (femur label map, lesion mask).

* :func:`make_case` — one case in memory (:class:`PhantomCase`: ``ct`` int16 HU, ``femur`` uint8 0/1 right/
  2 left, ``lesion`` uint8, ``geometry``, ``meta``);
* :func:`generate_cohort` — a dataset folder (volumes, ``manifest.json``, ``dataset.json``, optional previews).
"""

from bonemet.phantom.generate import CENTRES, PhantomCase, make_case, phantom_preset  # noqa: F401


def generate_cohort(*args, **kwargs):
    from bonemet.phantom.cohort import generate_cohort as _gen

    return _gen(*args, **kwargs)


generate_cohort.__doc__ = "See :func:`bonemet.phantom.cohort.generate_cohort`."
