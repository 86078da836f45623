"""The import direction of docs/CONTRACTS.md, checked on the source: a module may import its own layer
and those below it, never one above (so nothing below the CLI imports it)."""

import re
from pathlib import Path

import byol

LAYERS = {
    "errors": 0, "_lazy": 0, "atomic": 0, "config": 0,
    "runtime": 1, "data": 1, "augment": 1, "models": 1, "losses": 1, "optim": 1,
    "methods": 2, "run": 2,
    "eval": 3,
    "train": 4,
    "reports": 5, "reproduce": 5,
    "cli": 6, "__main__": 6,  # python -m byol: the command line
}
IMPORT = re.compile(r"^\s*(?:from|import) byol\.(\w+)", re.M)


def _modules():
    root = Path(byol.__file__).parent
    for f in sorted(root.rglob("*.py")):
        top = f.relative_to(root).parts[0].removesuffix(".py")
        if top != "__init__":
            yield f, top


def test_every_module_has_a_layer():
    assert {top for _, top in _modules()} <= set(LAYERS)


def test_imports_go_downward_only():
    upward = [(str(f.name), top, used) for f, top in _modules() for used in IMPORT.findall(f.read_text())
              if LAYERS[used] > LAYERS[top]]
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path):
    # the pattern really finds lazy imports inside functions (how an upward import would hide)
    src = "def f():\n    from byol.cli.main import main\n"
    assert IMPORT.findall(src) == ["cli"]
