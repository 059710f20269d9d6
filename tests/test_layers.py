"""The layers of docs/ARCHITECTURE.md, checked on the source: no package imports one above it."""
import ast
import os
import sys

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


def module_imports(path: str, package: str) -> set:
    """The modules of ``package`` that ``path`` imports, at any depth of the file (imports inside
    functions included: they close a circle as surely as the ones at the top, only later)."""
    here = os.path.splitext(os.path.relpath(path, ROOT))[0].replace(os.sep, ".")
    if here.endswith(".__init__"):
        here = here[:-len(".__init__")] + ".__init__"
    parent = here.rsplit(".", 1)[0]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    modules = set(os.path.splitext(name)[0] for name in os.listdir(os.path.join(ROOT, package)))

    def ours(dotted: str) -> str:
        """``package.mod`` for a module of the package, ``package.__init__`` for the package itself."""
        parts = dotted.split(".")
        return f"{package}.{parts[1]}" if len(parts) > 1 and parts[1] in modules else f"{package}.__init__"

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {ours(a.name) for a in node.names if a.name.split(".")[0] == package}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parent.split(".")[: len(parent.split(".")) - node.level + 1]
                dotted = ".".join(base + ([node.module] if node.module else []))
            else:
                dotted = node.module or ""
            if dotted.split(".")[0] != package:
                continue
            if dotted == package:  # from . import x / from package import x: x may be a module
                found |= {ours(f"{package}.{a.name}") for a in node.names}
            else:
                found.add(ours(dotted))
    found.discard(here)
    return found


def import_circles(package: str) -> list:
    """Every circle of imports among the modules of ``package`` (a strongly connected component of
    more than one module), each as a sorted list of module names."""
    graph = {}
    for path in package_files(package):
        if os.path.dirname(path) != os.path.join(ROOT, package):
            continue
        name = f"{package}.{os.path.splitext(os.path.basename(path))[0]}"
        graph[name] = module_imports(path, package)
    # Tarjan's strongly connected components
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_circle_inside_a_package(package):
    assert import_circles(package) == []


def test_the_check_sees_a_circle_through_an_import_inside_a_function(tmp_path, monkeypatch):
    pkg = tmp_path / "backbones"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "build.py").write_text("from .weights import load\n")
    (pkg / "weights.py").write_text("import os\n\ndef load():\n    from .hub import resolve\n")
    (pkg / "hub.py").write_text("def resolve():\n    from backbones.build import build\n")
    (pkg / "fine.py").write_text("from . import weights\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    assert import_circles("backbones") == [["backbones.build", "backbones.hub", "backbones.weights"]]
