"""The package's layout shows the flow: every import of a musicgen module, at the top of a module
or inside a function, goes down the order of LAYERS (or stays in its own subpackage), never up.
Read with the standard library's `ast` from the installed source, independent of musicgen."""

from __future__ import annotations

import ast
from pathlib import Path

import musicgen

PACKAGE = Path(musicgen.__file__).parent
# From the bottom up; a module may import its own layer and the layers below it.
LAYERS = (
    ("musicgen", "musicgen.errors", "musicgen.files", "musicgen.config", "musicgen.tfsetup"),
    ("musicgen.music",),
    ("musicgen.data",),
    ("musicgen.models",),
    ("musicgen.runs",),
    ("musicgen.generation",),
    ("musicgen.evaluation",),
    ("musicgen.training",),
    ("musicgen.web",),
    ("musicgen.cli", "musicgen.cli_options", "musicgen.__main__"),
)


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix that names `module` or its package."""
    best, length = None, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > length:
                best, length = index, len(name)
    assert best is not None, f"{module} is in no layer of LAYERS"
    return best


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("musicgen")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "musicgen":
                names |= {f"musicgen.{alias.name}" for alias in node.names}
            elif node.module.startswith("musicgen."):
                names.add(node.module)
    return {name for name in names if name != "musicgen.__version__"}


def test_imports_flow_one_way():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 60
    upward = []
    for path in modules:
        name = module_name(path)
        for imported in imported_modules(path):
            if layer_of(imported) > layer_of(name):
                upward.append(f"{name} imports {imported}")
    assert upward == []


def test_every_subpackage_is_a_layer_and_says_what_it_holds():
    for folder in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()):
        name = f"musicgen.{folder.name}"
        assert any(name in names for names in LAYERS), name
        assert ast.get_docstring(ast.parse((folder / "__init__.py").read_text())), name


def test_no_module_lies_loose_outside_the_layers():
    top = {f"musicgen.{p.stem}" for p in PACKAGE.glob("*.py")} - {"musicgen.__init__"}
    assert top == {"musicgen.errors", "musicgen.files", "musicgen.config", "musicgen.tfsetup",
                   "musicgen.cli", "musicgen.cli_options", "musicgen.__main__"}
