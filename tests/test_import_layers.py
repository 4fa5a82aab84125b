"""pixelar's modules import strictly downward, with no cycles.

The layers, lowest first (a module may import its own layer and the layers below it):

    _extension (and _C, _link_check) <- kernels <- ops <- nn <- models <- training <- cli
    data imports no other pixelar layer (training and cli read it); the package root
    pixelar/__init__.py, cli.py and __main__.py are the top.

Read with ``ast`` from the source (nothing is imported): every import statement, at module
level and inside functions alike, relative ones resolved. Checked:
  (a) no import of a higher layer, wherever it stands (a function-level import of a higher
      layer is a hidden cycle); lazy function-level imports of lower layers and of optional
      third-party packages (triton, matplotlib, tqdm, tensorboard) stay allowed;
  (b) no cycle in the graph of module-level imports between pixelar's modules (importing
      a package's __init__ counts as an edge to it; the implicit import of parent packages
      does not).
The one exception: reading the root package's ``__version__`` from inside a function.
"""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# second component of a module name (pixelar.<part>...) -> layer rank; None: the root
LAYERS = {
    "_C": 0,
    "_extension": 0,
    "_link_check": 0,  # setup.py's build check: imports nothing of pixelar
    "kernels": 1,
    "ops": 2,
    "nn": 3,
    "models": 4,
    "data": 5,
    "training": 6,
    "cli": 7,
    "__main__": 7,
    None: 7,
}
LAYER_NAMES = {
    0: "_extension",
    1: "kernels",
    2: "ops",
    3: "nn",
    4: "models",
    5: "data",
    6: "training",
    7: "cli / package root",
}
SELF_CONTAINED = {5}  # data: imports no other pixelar layer
ROOT_NAMES_READ_LAZILY = {"__version__"}  # plain constants of the root package
COMPILED = {"_C"}  # extension modules without Python source


def discover(package_dir):
    """{module name: path} of every .py file under package_dir (the package's own name is
    the folder's name)."""
    root = os.path.basename(os.path.normpath(package_dir))
    parent = os.path.dirname(os.path.normpath(package_dir))
    modules = {}
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), parent)[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            modules[".".join(rel)] = os.path.join(dirpath, f)
    for name in COMPILED:
        modules.setdefault(f"{root}.{name}", None)
    return modules


class _Imports(ast.NodeVisitor):
    """(node, module_level) of every import statement; module level: not inside a def or
    lambda (class bodies and try/if blocks run at import time)."""

    def __init__(self):
        self.found, self.depth = [], 0

    def _nested(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested

    def visit_Import(self, node):
        self.found.append((node, self.depth == 0))

    visit_ImportFrom = visit_Import


def import_edges(package_dir):
    """Every import of one of the package's modules: a list of
    (importer, imported, line, module_level, names) with module names resolved
    (``from . import x`` is an import of the submodule x when x is a module, else of the
    package; names: the names taken from the imported module, () for submodules)."""
    modules = discover(package_dir)
    root = os.path.basename(os.path.normpath(package_dir))
    edges = []
    for name, path in modules.items():
        if path is None:
            continue
        is_package = os.path.basename(path) == "__init__.py"
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        visitor = _Imports()
        visitor.visit(tree)
        for node, module_level in visitor.found:
            if isinstance(node, ast.Import):
                targets = [(alias.name, ()) for alias in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    assert base, f"{path}:{node.lineno}: relative import beyond the package"
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module
                targets, names = [], []
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    if sub in modules:
                        targets.append((sub, ()))
                    else:
                        names.append(alias.name)
                if names:
                    targets.append((module, tuple(names)))
            for target, names in targets:
                if target != root and not target.startswith(root + "."):
                    continue  # third-party or standard library
                # `import pixelar.ops.skew` names a module; keep the longest known prefix
                parts = target.split(".")
                while ".".join(parts) not in modules and len(parts) > 1:
                    parts.pop()
                edges.append((name, ".".join(parts), node.lineno, module_level, names))
    return edges


def layer(module):
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else None
    if key not in LAYERS:
        raise AssertionError(
            f"{module}: no layer for pixelar.{key}; add it to LAYERS in "
            f"{os.path.relpath(__file__, REPO)}"
        )
    return LAYERS[key]


def layer_violations(edges):
    """Imports of a higher layer (or, from data, of any other layer), as readable lines."""
    bad = []
    for importer, imported, line, module_level, names in edges:
        a, b = layer(importer), layer(imported)
        root_constant = (
            imported == importer.split(".")[0]
            and not module_level
            and names
            and set(names) <= ROOT_NAMES_READ_LAZILY
        )
        if root_constant:
            continue
        if b > a or (a in SELF_CONTAINED and b != a):
            where = "module level" if module_level else "inside a function"
            bad.append(
                f"{importer} (line {line}, {where}) imports {imported}: "
                f"{LAYER_NAMES[a]} may not import {LAYER_NAMES[b]}"
            )
    return bad


def module_cycles(edges):
    """Cycles of the module-level import graph, each as [m0, m1, ..., m0]."""
    graph = {}
    for importer, imported, _, module_level, _ in edges:
        if module_level and importer != imported:
            graph.setdefault(importer, set()).add(imported)
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


PIXELAR = os.path.join(REPO, "pixelar")


def test_every_module_has_a_layer():
    for module in discover(PIXELAR):
        layer(module)


def test_no_import_of_a_higher_layer():
    bad = layer_violations(import_edges(PIXELAR))
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_cycle_between_modules():
    cycles = module_cycles(import_edges(PIXELAR))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_what_they_look_for(tmp_path):
    """The walker on a made-up package: an upward import inside a function, one of data
    into models, relative imports of a submodule and of a name, and a cycle."""
    pkg = tmp_path / "pkg"
    files = {
        "__init__.py": "from . import ops\n__version__ = '1'\n",
        "ops/__init__.py": "",
        "ops/a.py": "def f():\n    from ..models import m\n",
        "models/__init__.py": "from .m import X\n",
        "models/m.py": "import torch\nfrom . import n\nX = 1\n",
        "models/n.py": "from .m import X\nfrom ..ops import a\n",
        "data/__init__.py": "from ..ops.a import f\n",
        "training/t.py": "def g():\n    from .. import __version__\n",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    edges = import_edges(str(pkg))
    assert ("pkg.models.m", "pkg.models.n", 2, True, ()) in edges
    assert ("pkg.models.n", "pkg.models.m", 1, True, ("X",)) in edges
    assert not any(e[1] == "torch" for e in edges)
    bad = layer_violations(edges)
    assert len(bad) == 2, bad
    assert bad[0].startswith("pkg.data (line 1, module level) imports pkg.ops.a")
    assert bad[1].startswith("pkg.ops.a (line 2, inside a function) imports pkg.models")
    assert module_cycles(edges) == [["pkg.models.m", "pkg.models.n", "pkg.models.m"]]


def test_the_walk_reads_this_repository():
    """Known imports are found, resolved (an empty walk would pass the checks above)."""
    edges = {(a, b, module_level) for a, b, _, module_level, _ in import_edges(PIXELAR)}
    for edge in [
        ("pixelar.ops.pixel_network_sample", "pixelar.ops.draw", True),
        ("pixelar.nn.diagonal_lstm", "pixelar.ops", True),
        ("pixelar.models.pixel_networks", "pixelar.nn", True),
        ("pixelar.cli.plot", "pixelar.training.history", False),
    ]:
        assert edge in edges, edge
