"""Static wiring checks of the Slicer extension (no Slicer needed).

* every ``.ui`` parses; every ``self.ui.<name>`` used by a module's Python exists in its ``.ui``;
* every ``SlicerParameterName`` in a ``.ui`` is a field of the module's parameter node, with a widget type the
  parameterNodeWrapper can connect to that field's type;
* every script/resource named in a module ``CMakeLists.txt`` exists and every module file is listed;
* the extension ``CMakeLists.txt`` is a valid Slicer extension description;
* module files import no torch/monai at top level; the Qt-free Lib files import no qt/ctk/slicer at top level and
  really load without Qt (checked in a fresh interpreter);
* the dependency list installed on first use matches the engine's pyproject dependencies.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["BoneMetSeg", "BoneMetSynth"]
QT_FREE = {
    "BoneMetSeg": ["BoneMetSegLib/__init__.py", "BoneMetSegLib/Engine.py", "BoneMetSegLib/Process.py",
                   "BoneMetSegLib/Jobs.py", "BoneMetSegLib/Logic.py", "BoneMetSegLib/Install.py",
                   "BoneMetSegLib/Testing.py"],
    "BoneMetSynth": ["BoneMetSynthLib/__init__.py", "BoneMetSynthLib/Logic.py"],
}
SHARED_JOB_VIEW = ROOT / "BoneMetSeg" / "BoneMetSegLib" / "JobView.py"


def ui_file(module: str) -> Path:
    return ROOT / module / "Resources" / "UI" / f"{module}.ui"


def ui_widgets(module: str) -> dict[str, ET.Element]:
    tree = ET.parse(ui_file(module))
    return {w.get("name"): w for w in tree.iter("widget")}


def module_py_files(module: str) -> list[Path]:
    return sorted(p for p in (ROOT / module).rglob("*.py") if "__pycache__" not in p.parts)


def ui_names_used(path: Path) -> set[str]:
    return set(re.findall(r"self\.ui\.([A-Za-z_][A-Za-z0-9_]*)", path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("module", MODULES)
def test_ui_parses_and_has_module_root(module):
    tree = ET.parse(ui_file(module))
    root = tree.getroot()
    assert root.tag == "ui" and root.findtext("class") == module
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == module
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "duplicate widget names"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    custom = {c for c in used if not c.startswith("Q")}
    assert custom <= declared, f"custom widgets without declaration: {custom - declared}"
    # every MRML widget gets the scene
    receivers = {c.findtext("receiver") for c in root.iter("connection")}
    mrml = {w.get("name") for w in root.iter("widget") if w.get("class").startswith("qMRML")} - {module}
    assert mrml <= receivers, f"MRML widgets not connected to mrmlSceneChanged: {mrml - receivers}"


@pytest.mark.parametrize("module", MODULES)
def test_every_self_ui_name_exists_in_ui(module):
    widgets = set(ui_widgets(module))
    for py in module_py_files(module):
        missing = ui_names_used(py) - widgets
        assert not missing, f"{py.relative_to(ROOT)} uses self.ui.{sorted(missing)} absent from {module}.ui"
    # the shared job view is used by both panels
    missing = ui_names_used(SHARED_JOB_VIEW) - widgets
    assert not missing, f"JobView needs {sorted(missing)} in {module}.ui"


def parameter_fields(cls_name: str) -> dict[str, str]:
    tree = ast.parse((ROOT / "BoneMetSeg" / "BoneMetSegLib" / "Parameters.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    assert any(ast.unparse(d) == "parameterNodeWrapper" for d in cls.decorator_list)
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}


def _compatible(widget_class: str, annotation: str) -> bool:
    if widget_class == "qMRMLNodeComboBox":
        return annotation.startswith("slicer.vtkMRML")
    if widget_class == "QCheckBox":
        return annotation == "bool"
    if widget_class == "QSpinBox":
        return annotation == "int" or (annotation.startswith("Annotated[int") and "WithinRange" in annotation)
    if widget_class in ("QDoubleSpinBox", "ctkSliderWidget"):  # sliders need bounds
        return annotation.startswith("Annotated[float") and "WithinRange" in annotation
    if widget_class == "QComboBox":  # string choices need a Choice annotation
        return "Choice(" in annotation
    if widget_class == "QLineEdit":
        return annotation == "str"
    if widget_class == "ctkPathLineEdit":
        return annotation in ("pathlib.Path", "Path")
    return False


@pytest.mark.parametrize("module", MODULES)
def test_parameter_names_match_parameter_node(module):
    fields = parameter_fields(f"{module}ParameterNode")
    bound = {}
    for name, w in ui_widgets(module).items():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = (name, w.get("class"))
    assert bound, "no widget is bound to the parameter node"
    for param, (widget, cls) in bound.items():
        assert param in fields, f"{widget} is bound to unknown parameter {param!r}"
        assert _compatible(cls, fields[param]), f"{widget} ({cls}) cannot represent {param}: {fields[param]}"


def cmake_list(text: str, var: str) -> list[str]:
    m = re.search(r"set\(\s*" + var + r"\s+(.*?)\)", text, re.S)
    assert m, f"{var} not set"
    return [tok for tok in m.group(1).split() if not tok.startswith("#")]


@pytest.mark.parametrize("module", MODULES)
def test_module_cmakelists_lists_every_file(module):
    text = (ROOT / module / "CMakeLists.txt").read_text()
    assert re.search(r"set\(MODULE_NAME\s+" + module + r"\)", text)
    assert "slicerMacroBuildScriptedModule" in text and "slicer_add_python_unittest" in text
    scripts = [s.replace("${MODULE_NAME}", module) for s in cmake_list(text, "MODULE_PYTHON_SCRIPTS")]
    resources = [s.replace("${MODULE_NAME}", module) for s in cmake_list(text, "MODULE_PYTHON_RESOURCES")]
    for rel in scripts + resources:
        assert (ROOT / module / rel).is_file(), f"{module}/CMakeLists.txt names a missing file: {rel}"
    on_disk = {p.relative_to(ROOT / module).as_posix() for p in module_py_files(module)}
    assert on_disk == set(scripts), f"not listed: {on_disk - set(scripts)}; listed but absent: {set(scripts) - on_disk}"
    res_disk = {p.relative_to(ROOT / module).as_posix() for p in (ROOT / module / "Resources").rglob("*")
                if p.is_file()}
    assert res_disk == set(resources), f"resources not listed: {res_disk - set(resources)}"
    assert f"Resources/UI/{module}.ui" in resources and f"Resources/Icons/{module}.png" in resources


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_extension_cmakelists():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"project\(BoneMet\)", text)
    for var in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(r"set\(" + var + r"\s+\"[^\"]+\"", text), f"{var} missing or empty"
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"[^"]*PyTorch', text)
    assert "find_package(Slicer REQUIRED)" in text and "include(${Slicer_USE_FILE})" in text
    assert "include(${Slicer_EXTENSION_GENERATE_CONFIG})" in text and "include(${Slicer_EXTENSION_CPACK})" in text
    subdirs = re.findall(r"add_subdirectory\((\w+)\)", text)
    assert set(subdirs) == {"Logic", *MODULES}
    for d in subdirs:
        assert (ROOT / d / "CMakeLists.txt").is_file()
    icon = re.search(r'EXTENSION_ICONURL\s+"[^"]*/main/(\S+?)"', text).group(1)
    assert (ROOT / icon).is_file() and _png_size(ROOT / icon) == (128, 128)
    for module in MODULES:
        assert _png_size(ROOT / module / "Resources" / "Icons" / f"{module}.png") == (128, 128)
    s4ext = (ROOT / "Resources" / "ExtensionIndex" / "BoneMet.s4ext").read_text()
    assert re.search(r"^depends PyTorch$", s4ext, re.M) and re.search(r"^category Segmentation$", s4ext, re.M)


def test_engine_shipped_inside_extension():
    text = (ROOT / "Logic" / "CMakeLists.txt").read_text()
    assert "ctkMacroCompilePythonScript" in text and "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}" in text
    assert "bonemet/*.py" in text and "bonemet/presets/*.json" in text
    assert (ROOT / "Logic" / "bonemet" / "mrml.py").is_file()


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (including inside module-level if/try blocks), not in functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()

    def visit(nodes):
        for n in nodes:
            if isinstance(n, ast.Import):
                out.update(a.name.split(".")[0] for a in n.names)
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                out.add(n.module.split(".")[0])
            elif isinstance(n, (ast.If, ast.Try, ast.With)):
                visit(getattr(n, "body", []))
                visit(getattr(n, "orelse", []))
                visit(getattr(n, "finalbody", []))
                for h in getattr(n, "handlers", []):
                    visit(h.body)

    visit(tree.body)
    return out


@pytest.mark.parametrize("module", MODULES)
def test_no_torch_or_monai_at_top_level(module):
    for py in module_py_files(module):
        heavy = _top_level_imports(py) & {"torch", "monai", "einops", "safetensors"}
        assert not heavy, f"{py.relative_to(ROOT)} imports {heavy} at top level"


@pytest.mark.parametrize("module", MODULES)
def test_qt_free_files_import_no_qt(module):
    for rel in QT_FREE[module]:
        gui = _top_level_imports(ROOT / module / rel) & {"qt", "ctk", "slicer", "vtk"}
        assert not gui, f"{module}/{rel} should be Qt-free but imports {gui} at top level"


def test_qt_free_logic_loads_without_qt_in_fresh_interpreter():
    code = (
        "import sys\n"
        f"sys.path[:0] = [{str(ROOT / 'BoneMetSeg')!r}, {str(ROOT / 'BoneMetSynth')!r}]\n"
        "import BoneMetSegLib.Logic, BoneMetSegLib.Install, BoneMetSegLib.Testing, BoneMetSynthLib.Logic\n"
        "bad = [m for m in ('qt', 'ctk', 'torch', 'monai') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_first_use_requirements_match_engine_dependencies():
    sys.path.insert(0, str(ROOT / "BoneMetSeg"))
    from BoneMetSegLib import Install

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].lower() for d in deps}
    shipped_by_slicer = {"numpy", "simpleitk"}
    ours = {re.split(r"[<>=]", r)[0].lower()
            for r in Install.CORE_REQUIREMENTS + [Install.TORCH_REQUIREMENT] + Install.DEEP_REQUIREMENTS}
    assert ours == names - shipped_by_slicer
    # in this test environment everything is installed: nothing would be downloaded (offline use)
    assert Install.missingRequirements(deep=True) == []
    assert not Install.requirementSatisfied("surely-not-a-package-bonemet>=1")
    assert not Install.requirementSatisfied("numpy>=999")
    # the engine's Python floor matches pyproject; Slicer 5.8 (Python 3.9) gets a clear message
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f">={Install.PYTHON_MIN[0]}.{Install.PYTHON_MIN[1]}" in floor
    assert Install.unsupportedPython((3, 9)) and "5.10" in Install.unsupportedPython((3, 9))
    assert Install.unsupportedPython((3, 12)) is None


def test_no_folder_named_slicer_on_test_paths():
    """The pip 'slicer' meta-package merges every folder named 'slicer' on sys.path into its namespace: such a
    folder in Testing/ (pytest puts it on sys.path) would be imported as part of Slicer."""
    for d in (ROOT / "Testing", ROOT / "Logic", ROOT / "BoneMetSeg", ROOT / "BoneMetSynth", ROOT):
        assert not (d / "slicer").exists(), f"{d / 'slicer'} shadows the slicer package"


def test_selftest_workflow_runs_both_modules():
    wf = ROOT / ".github" / "workflows" / "slicer-selftests.yml"
    text = wf.read_text()
    assert "xvfb-run" in text and "--no-main-window" in text and "--additional-module-paths" in text
    for module in MODULES:
        assert module in text
    runner = ROOT / "Testing" / "run_slicer_selftests.py"
    assert runner.is_file()
    ast.parse(runner.read_text())
    for module in MODULES:
        src = (ROOT / module / f"{module}.py").read_text()
        tree = ast.parse(src)
        classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        for suffix, base in (("", "ScriptedLoadableModule"), ("Widget", "ScriptedLoadableModuleWidget"),
                             ("Logic", "ScriptedLoadableModuleLogic"), ("Test", "ScriptedLoadableModuleTest")):
            cls = classes.get(module + suffix)
            assert cls is not None, f"{module}.py lacks class {module + suffix}"
            assert base in [ast.unparse(b) for b in cls.bases]
