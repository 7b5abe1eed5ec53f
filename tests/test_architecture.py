"""The package's shape, checked on its source: import layers without circles, no private names used across
modules, long functions say why they are one piece, the contract imports no HDL or simulator."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "systolic"

#: Allowed dependencies between subpackages (docs/architecture.md): each may import itself and these.
#: golden <- arch <- {compiler, hw} <- sim <- report <- flows <- cli; quantize and fpga sit beside.
LAYERS = {
    "golden": set(),
    "arch": {"golden"},
    "compiler": {"golden", "arch"},
    "hw": {"golden", "arch"},
    "sim": {"golden", "arch", "compiler", "hw"},
    "report": {"golden", "arch", "compiler"},
    "quantize": {"golden", "models"},
    "models": {"golden", "quantize"},
    "fpga": {"golden", "arch", "compiler", "hw", "sim"},
    "flows": {"golden", "arch", "compiler", "hw", "sim", "report", "quantize", "models"},
    "sweep": {"golden", "arch", "compiler", "hw", "sim", "report", "quantize", "models", "fpga", "flows"},
    "cli": {"*"},
    "demo": {"*"},
    "__init__": set(),
    "__main__": {"cli"},
}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(name, path):
    """(imported module, line, at module level?) for every import of a systolic module in *path*."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("systolic"):
                continue
            for alias in node.names:
                cand = f"{mod}.{alias.name}"
                out.append((cand if (PKG.parent / (cand.replace(".", "/") + ".py")).exists()
                            or (PKG.parent / cand.replace(".", "/")).is_dir() else mod,
                            node.lineno, id(node) in top_level, alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("systolic"):
                    out.append((alias.name, node.lineno, id(node) in top_level, None))
    return out


MODULES = dict(_modules())


def _resolve(mod):
    """The module a dotted name denotes (a package's __init__ for a package)."""
    while mod and mod not in MODULES:
        mod = mod.rsplit(".", 1)[0] if "." in mod else ""
    return mod


def _graph():
    g = {}
    for name, path in MODULES.items():
        g[name] = {_resolve(m) for m, *_ in _imports(name, path)} - {name, ""}
    return g


def _layer(mod):
    """The module's layer: its subpackage; command modules (``*commands``) belong to the CLI."""
    parts = mod.split(".")
    if parts[-1].endswith("commands"):
        return "cli"
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_circle():
    """No module reaches itself through imports (at module level or inside functions), packages included."""
    g = _graph()
    seen, stack, cycles = set(), [], []

    def visit(n, on_path):
        if n in on_path:
            cycles.append(stack[stack.index(n):] + [n])
            return
        if n in seen:
            return
        seen.add(n)
        on_path.add(n)
        stack.append(n)
        for m in sorted(g.get(n, ())):
            # A package's __init__ re-exports its submodules; a submodule importing a sibling through the
            # package is fine as long as the package does not import it back: count real module edges only.
            visit(m, on_path)
        stack.pop()
        on_path.remove(n)

    for n in sorted(g):
        visit(n, set())
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_layers():
    bad = []
    for name, deps in _graph().items():
        src = _layer(name)
        allowed = LAYERS.get(src)
        assert allowed is not None, f"{name}: subpackage {src!r} has no layer in this test"
        for d in deps:
            dst = _layer(d)
            if dst != src and "*" not in allowed and dst not in allowed and dst != "__init__":
                bad.append(f"{name} imports {d}")
    assert not bad, "\n".join(bad)


def _sources():
    """Every Python file that uses the package: its modules, the tests and the scripts."""
    yield from MODULES.items()
    for path in sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]):
        yield ".".join(path.relative_to(ROOT).with_suffix("").parts), path


def test_no_private_name_used_outside_its_module():
    bad = []
    for name, path in _sources():
        modules = set()      # names bound to systolic modules in this file
        for mod, line, _, alias in _imports(name, path):
            if alias is None:
                continue
            if alias.startswith("_") and not alias.startswith("__"):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {alias} from {mod}")
            if mod.endswith("." + alias) and mod in MODULES:
                modules.add(alias)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.alias) and node.name.startswith("systolic") and node.asname:
                modules.add(node.asname)
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


#: A function longer than this must say in its docstring why it is one piece.
LONG = 150


def test_long_functions_say_why():
    bad = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if n > LONG and "one piece" not in doc:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} is {n} lines")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", ["systolic.arch", "systolic.arch.timing", "systolic.compiler",
                                    "systolic.golden", "systolic.flows", "systolic.cli"])
def test_plain_python_modules_import_no_hdl_or_simulator(module):
    code = f"import sys, {module}; print(sorted(m for m in ('amaranth', 'cocotb', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cycle_model_has_no_bare_latency():
    """arch/timing.py takes every latency from arch/latency.py: its only integer literals are 0 and 1
    (``+ 1``: the next cycle, or one more of something)."""
    tree = ast.parse((PKG / "arch" / "timing.py").read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    ints = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docstrings
            and isinstance(n.value, int) and not isinstance(n.value, bool)}
    assert ints <= {0, 1}, ints
