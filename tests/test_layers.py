"""The layers of docs/ARCHITECTURE.md, checked on the source: no package imports one above it."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What each package may import of ours (docs/ARCHITECTURE.md, "The layers").
ALLOWED = {
    "engine": {"engine"},
    "backbones": {"engine", "backbones"},
    "classification": {"engine", "backbones", "classification"},
    "detection": {"engine", "backbones", "detection"},
    "segmentation": {"engine", "backbones", "detection", "segmentation"},
}
OURS = set(ALLOWED) | {"tools", "benchmarks", "tests"}


def imported_packages(path: str) -> set:
    """Our top-level packages that ``path`` imports (absolute imports; relative ones stay inside)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in OURS}
    return found


def package_files(package: str):
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_goes_up_the_layers(package):
    wrong = {os.path.relpath(path, ROOT): sorted(imported_packages(path) - ALLOWED[package])
             for path in package_files(package)}
    assert not {k: v for k, v in wrong.items() if v}


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom detection.coco import load_coco_json\nfrom . import sibling\n")
    assert imported_packages(str(bad)) == {"detection"}


def test_lazy_exports_stay_in_their_layer():
    # engine/lazy.py exports name -> module strings, which ast does not see as imports
    for package, allowed in ALLOWED.items():
        with open(os.path.join(ROOT, package, "__init__.py"), encoding="utf-8") as f:
            text = f.read()
        for other in set(ALLOWED) - allowed:
            assert f'"{other}.' not in text and f"'{other}." not in text, (package, other)
