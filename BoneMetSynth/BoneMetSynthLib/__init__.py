"""BoneMetSynth module library.

Qt-free: ``Logic`` (lesion library, placement with live preview, refinement and batch jobs; tested with
slicer-core). Slicer application only: ``Widget`` (the panel). The job machinery (engine location, background
process runners, progress parsing, dependency installation) is shared with BoneMetSeg (``BoneMetSegLib``).
"""
