"""BoneMet engine: synthetic lesioned femurs, diffusion refinement and 3D U-Net segmentation
of femoral bone metastases in CT.

Pure Python on numpy, scipy, SimpleITK, torch and MONAI. Never imports Qt or the Slicer application;
:mod:`bonemet.mrml` is the only bridge to Slicer's scene and imports ``slicer`` lazily.
"""

__version__ = "0.1.0"

from bonemet.errors import BoneMetError, InputError  # noqa: F401
