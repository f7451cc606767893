"""Run the BoneMet module self-tests inside 3D Slicer and exit with their status (for headless CI).

Usage (see docs/slicer.md and .github/workflows/slicer-selftests.yml)::

    xvfb-run -a Slicer --no-splash --no-main-window --testing \
        --additional-module-paths BoneMetSeg BoneMetSynth \
        --python-script Testing/run_slicer_selftests.py BoneMetSeg BoneMetSynth

Each module's ``<Module>Test`` (a ``ScriptedLoadableModuleTest``) builds a phantom case and runs the module logic end
to end. The exit status is 0 only when every test passed.
"""

import importlib
import sys
import traceback
import unittest

import slicer

modules = [a for a in sys.argv[1:] if not a.startswith("-")] or ["BoneMetSeg", "BoneMetSynth"]
failed = []
for name in modules:
    print(f"===== {name} self-test", flush=True)
    try:
        if not hasattr(slicer.modules, name.lower()):
            raise RuntimeError(f"module {name} is not loaded (check --additional-module-paths)")
        testClass = getattr(importlib.import_module(name), f"{name}Test")
        suite = unittest.TestLoader().loadTestsFromTestCase(testClass)
        result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
        if not result.wasSuccessful() or result.testsRun == 0:
            failed.append(name)
    except Exception:  # noqa: BLE001 - report and fail the run
        traceback.print_exc()
        failed.append(name)

print("===== BoneMet self-tests:", "FAILED " + ", ".join(failed) if failed else "all passed", flush=True)
slicer.util.exit(1 if failed else 0)
