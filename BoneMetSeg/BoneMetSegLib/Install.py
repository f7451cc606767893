"""First-use installation of the engine's Python dependencies inside Slicer.

PyTorch is installed through the PyTorch extension (``PyTorchUtils``: picks the CUDA/CPU build that fits the
machine); the other packages with ``slicer.util.pip_install``. Nothing is installed without the user's
confirmation, nothing is downloaded when everything is present (works offline), and Slicer's own SimpleITK and
numpy are never replaced. The requirement checks are Qt-free (tested with slicer-core).
"""

from __future__ import annotations

import importlib.metadata
import re
import sys

#: Python packages the engine needs beyond what Slicer ships (numpy, SimpleITK), by feature.
CORE_REQUIREMENTS = ["scipy>=1.10", "tqdm>=4.60", "matplotlib>=3.7"]
TORCH_REQUIREMENT = "torch>=2.1"
DEEP_REQUIREMENTS = ["monai>=1.4", "einops>=0.7", "safetensors>=0.4"]


#: The engine (and its numpy 2 / MONAI dependencies) needs Python 3.10+: Slicer 5.10 or newer (Python 3.12).
PYTHON_MIN = (3, 10)


def unsupportedPython(version_info=None) -> str | None:
    """A user-readable reason when this Python is too old for the engine, else None."""
    v = tuple((version_info or sys.version_info)[:2])
    if v < PYTHON_MIN:
        return (f"BoneMet needs Python {PYTHON_MIN[0]}.{PYTHON_MIN[1]} or newer; this Slicer has Python "
                f"{v[0]}.{v[1]}. Please use 3D Slicer 5.10 or newer.")
    return None


def _version_tuple(v: str) -> tuple:
    parts = []
    for p in re.split(r"[.+-]", v)[:3]:
        m = re.match(r"\d+", p)
        parts.append(int(m.group()) if m else 0)
    return tuple(parts)


def requirementSatisfied(req: str) -> bool:
    """``name>=version`` (or a bare name) installed in this Python environment?"""
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(>=\s*([0-9][0-9A-Za-z.]*))?\s*$", req)
    if not m:
        raise ValueError(f"unsupported requirement {req!r} (use 'name' or 'name>=version')")
    name, minimum = m.group(1), m.group(3)
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return minimum is None or _version_tuple(installed) >= _version_tuple(minimum)


def missingRequirements(deep: bool = True) -> list[str]:
    """Requirements not yet satisfied (``deep``: also PyTorch and MONAI, needed for lesions/refinement/training)."""
    reqs = list(CORE_REQUIREMENTS) + ([TORCH_REQUIREMENT] + DEEP_REQUIREMENTS if deep else [])
    return [r for r in reqs if not requirementSatisfied(r)]


def installDependencies(deep: bool = True, askConfirmation: bool = True, log=print) -> bool:
    """Install what is missing (Slicer application). Returns True when everything is available afterwards;
    False when the user declined. Raises RuntimeError with a user-readable message on failure."""
    import slicer

    reason = unsupportedPython()
    if reason:
        raise RuntimeError(reason)
    missing = missingRequirements(deep)
    if not missing:
        return True
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            "BoneMet needs these Python packages, which will be downloaded and installed into Slicer now "
            "(this can take several minutes):\n\n  " + "\n  ".join(missing), "BoneMet: install dependencies"):
        return False
    if TORCH_REQUIREMENT in missing:
        log("Installing PyTorch through the PyTorch extension...")
        try:
            import PyTorchUtils
        except ModuleNotFoundError as exc:
            raise RuntimeError("The 'PyTorch' extension is required: install it from the Extensions Manager, "
                               "restart Slicer and try again.") from exc
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT[len("torch"):]) \
                is None:
            raise RuntimeError("PyTorch could not be installed (see the Python console).")
        missing.remove(TORCH_REQUIREMENT)
    for req in missing:
        log(f"Installing {req}...")
        slicer.util.pip_install(req)
    still = missingRequirements(deep)
    if still:
        raise RuntimeError("Some packages are still missing after installation: " + ", ".join(still))
    log("All BoneMet dependencies are installed.")
    return True
