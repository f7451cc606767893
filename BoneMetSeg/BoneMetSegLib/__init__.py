"""BoneMetSeg module library.

Qt-free (importable with the pip package ``slicer-core``, exercised by the pytest suite):
``Engine`` (where the engine is, which Python runs it, command lines), ``Process`` (progress parsing and a
blocking subprocess runner), ``Logic`` (femur / lesion / compare / variability logic over MRML through
``bonemet.mrml``).
Needs the Slicer application: ``QtProcess`` (in ``Process``), ``Install`` (first-use dependency install),
``Widget`` (the panel).
"""
