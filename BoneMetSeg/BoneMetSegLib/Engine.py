"""Where the BoneMet engine lives, which Python runs it, and the command lines of its jobs. Qt-free.

The engine (``bonemet`` package) is shipped inside the extension next to the module scripts (installed into
Slicer's ``qt-scripted-modules`` folder); in a source checkout it is ``<repo>/Logic``. Heavy jobs run as
``<python> -m bonemet <command> ...`` in a background process with ``BONEMET_PROGRESS=json``, so progress
arrives as ``BONEMET_PROGRESS {json}`` lines on stderr.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

DEVICES = ("auto", "cpu", "cuda")


def engine_dir() -> Path:
    """Folder that contains the ``bonemet`` package (to put on ``sys.path`` / ``PYTHONPATH``)."""
    here = Path(__file__).resolve().parent  # .../BoneMetSegLib
    candidates = [
        here.parent,  # installed extension: bonemet/ next to BoneMetSegLib/ in qt-scripted-modules
        here.parent.parent / "Logic",  # source tree: <repo>/BoneMetSeg/BoneMetSegLib -> <repo>/Logic
    ]
    env = os.environ.get("BONEMET_ENGINE_DIR")
    if env:
        candidates.insert(0, Path(env))
    for c in candidates:
        if (c / "bonemet" / "__init__.py").exists():
            return c
    try:  # installed with pip into Slicer's Python
        import bonemet

        return Path(bonemet.__file__).resolve().parent.parent
    except ImportError:
        pass
    raise RuntimeError("the BoneMet engine (bonemet package) was not found next to the module nor in "
                       f"{candidates[-1]}; reinstall the extension or set BONEMET_ENGINE_DIR")


def ensure_engine_importable() -> Path:
    """Put the engine folder on ``sys.path`` (idempotent); returns it."""
    d = engine_dir()
    if str(d) not in sys.path:
        sys.path.insert(0, str(d))
    return d


def python_executable() -> str:
    """The interpreter that runs the engine: Slicer's ``PythonSlicer`` inside Slicer, else this Python."""
    exe = os.environ.get("BONEMET_PYTHON")
    if exe:
        return exe
    if "slicer" in sys.modules and getattr(sys.modules["slicer"], "app", None) is not None:
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def process_environment(base: dict | None = None) -> dict[str, str]:
    """Environment for engine jobs: machine-readable progress, engine on PYTHONPATH, no tqdm bars."""
    env = dict(os.environ if base is None else base)
    env["BONEMET_PROGRESS"] = "json"
    env["PYTHONUNBUFFERED"] = "1"
    d = str(engine_dir())
    old = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = d if not old else (old if d in old.split(os.pathsep) else d + os.pathsep + old)
    return env


def bonemet_args(command: str, *args: str) -> list[str]:
    """Arguments after the interpreter: ``-m bonemet <command> ...``."""
    return ["-m", "bonemet", command, *[str(a) for a in args]]


def _device(device: str) -> str:
    device = (device or "auto").lower()
    if device == "gpu":
        device = "cuda"
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    return device


# ---- one builder per job (the CLI shapes of the engine's issues) -------------------------------------------------

def femur_command(ct: str | os.PathLike, out: str | os.PathLike) -> list[str]:
    """``bonemet femur CT -o MASK``: femur label map (1 = right, 2 = left)."""
    return bonemet_args("femur", str(ct), "-o", str(out))


def predict_command(ct, model, out, femur=None, device: str = "auto", tta: bool = False) -> list[str]:
    """``bonemet predict CT --model PKG -o MASK [--femur MASK] [--device D] [--tta]``."""
    args = [str(ct), "--model", str(model), "-o", str(out), "--device", _device(device)]
    if femur is not None:
        args += ["--femur", str(femur)]
    if tta:
        args.append("--tta")
    return bonemet_args("predict", *args)


def variability_command(csv_path, out_dir, report=None) -> list[str]:
    """``bonemet variability CSV -o OUT_DIR --report OUT_DIR/report.html``."""
    report = report or Path(out_dir) / "report.html"
    return bonemet_args("variability", str(csv_path), "-o", str(out_dir), "--report", str(report))


def lesions_extract_command(dataset_dir, out_dir) -> list[str]:
    """``bonemet lesions extract DATASET_DIR -o LIBRARY``."""
    return bonemet_args("lesions", "extract", str(dataset_dir), "-o", str(out_dir))


def synth_command(library, healthy, out_dir, per_pair: int = 10, seed: int = 0, workers: int = 1,
                  preset: str | None = None) -> list[str]:
    """``bonemet synth --lesions LIBRARY --healthy DATASET_DIR -o DIR --per-pair K --seed S --workers W``."""
    args = ["--lesions", str(library), "--healthy", str(healthy), "-o", str(out_dir), "--per-pair", int(per_pair),
            "--seed", int(seed), "--workers", int(workers)]
    if preset:
        args += ["--preset", preset]
    return bonemet_args("synth", *args)


def refine_command(dataset_dir, model_dir, out_dir, lam: float = 10, ddim_steps: int = 50, seed: int = 0,
                   device: str = "auto") -> list[str]:
    """``bonemet refine DATASET_DIR --model MODEL_DIR -o OUT_DIR --lambda L --ddim-steps S --seed S``."""
    return bonemet_args("refine", str(dataset_dir), "--model", str(model_dir), "-o", str(out_dir),
                        "--lambda", _num(lam), "--ddim-steps", int(ddim_steps), "--seed", int(seed),
                        "--device", _device(device))


def ddpm_train_command(dataset_dir, model_dir, preset: str = "small", steps: int | None = None, seed: int = 0,
                       device: str = "auto", resume: bool = False) -> list[str]:
    """``bonemet ddpm train DATASET_DIR -o MODEL_DIR --preset P [--steps N]``."""
    args = ["train", str(dataset_dir), "-o", str(model_dir), "--preset", preset, "--seed", int(seed),
            "--device", _device(device)]
    if steps:
        args += ["--steps", int(steps)]
    if resume:
        args.append("--resume")
    return bonemet_args("ddpm", *args)


def train_command(datasets: Sequence, package, preset: str = "small", epochs: int | None = None,
                  init=None, seed: int = 0, device: str = "auto", resume: bool = False) -> list[str]:
    """``bonemet train DATASET_DIR... -o MODEL_PKG --preset P [--epochs N] [--init PKG]``."""
    if isinstance(datasets, (str, os.PathLike)):
        datasets = [datasets]
    args = [*[str(d) for d in datasets], "-o", str(package), "--preset", preset, "--seed", int(seed),
            "--device", _device(device)]
    if epochs:
        args += ["--epochs", int(epochs)]
    if init:
        args += ["--init", str(init)]
    if resume:
        args.append("--resume")
    return bonemet_args("train", *args)


def _num(v: float) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


def describe(program: str, args: Sequence[str]) -> str:
    """A copy-pasteable shell form of a command (for the log)."""
    import shlex

    return " ".join(shlex.quote(str(a)) for a in [program, *args])
