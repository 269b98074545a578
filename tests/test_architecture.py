"""The two tiers, enforced: the library never imports the application, only ``ridurre._compat``
touches Keras internals, no import cycles, and the score-file path runs without Keras."""

import ast
import os
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

PACKAGE = Path(ROOT) / "ridurre"

# modules that only exist so that old commands keep working: they start the application's commands
ENTRY_POINT_SHIMS = {"ridurre.prune_scores", "ridurre.sensitivity.__main__"}

# what the graph internals of Keras are called; only ridurre._compat may use them
PRIVATE_KERAS = (
    "keras.src",
    "_keras_history",
    "_inbound_nodes",
    "_nodes_by_depth",
    "._functional",
    "_inputs_struct",
    "_outbound_nodes",
)


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


MODULES = dict(_modules())


def _imports(name, path):
    """Every ridurre module ``name`` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ridurre"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if not base.startswith("ridurre"):
                continue
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in MODULES else base)
    return {m for m in found if m in MODULES}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_library_never_imports_the_application():
    offenders = {
        name: sorted(m for m in deps if m == "ridurre.app" or m.startswith("ridurre.app."))
        for name, deps in GRAPH.items()
        if not name.startswith("ridurre.app") and name not in ENTRY_POINT_SHIMS
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_only_compat_touches_keras_internals():
    offenders = []
    for name, path in MODULES.items():
        if name == "ridurre._compat":
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{name}: {word}" for word in PRIVATE_KERAS if word in text]
    assert not offenders


def test_no_import_cycles():
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(GRAPH[node]):
            if dep == node:
                continue
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    assert not cycles


def test_subpackages_form_layers():
    """Packages depend on lower layers only (the order below), never on a higher one."""
    layers = [
        {"_lazy", "_validation", "_io", "_loading", "_progress", "_compat"},
        {"rules"},
        {"graph"},
        {"surgery", "metrics"},
        {"criteria"},
        {"scorefile", "pruning"},
        {"sensitivity", "ssvep", "zoo", "deploy"},
        {"app"},
    ]
    rank = {pkg: i for i, members in enumerate(layers) for pkg in members}
    wrong = []
    for name, deps in GRAPH.items():
        top = name.split(".")[1] if "." in name else None
        if top not in rank:
            continue
        for dep in deps:
            other = dep.split(".")[1] if "." in dep else None
            if other in rank and rank[other] > rank[top] and name not in ENTRY_POINT_SHIMS:
                wrong.append(f"{name} -> {dep}")
    assert not wrong


def test_the_score_file_path_and_the_command_line_import_no_keras():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('keras', 'tensorflow', 'jax', 'torch'):\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import ridurre, ridurre.scorefile, ridurre.rules, ridurre.criteria, ridurre.masks, ridurre.prune_scores\n"
        "import ridurre.app.cli, ridurre.app.config, ridurre.app.scorefile_cli, ridurre.pruning.schedules\n"
        "import ridurre.ssvep, ridurre.zoo.datasets, ridurre._io, ridurre._validation\n"
        "assert ridurre.rules.rule_for_class_name('Conv2D') is not None\n"
        "assert ridurre.app.cli.build_parser('prune-scores') is not None\n"
        "print('no keras')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "no keras" in result.stdout, result.stderr[-2000:]


def test_old_module_paths_keep_working():
    code = (
        "import ridurre\n"
        "from ridurre.surgeon import Surgeon, delete_channels, zero_channels\n"
        "from ridurre.rules import register_rule, PassThroughRule\n"
        "from ridurre.prune_scores import prune_by_scores, main\n"
        "from ridurre.masks import apply_pruned_weights, read_model_file\n"
        "from ridurre.models import vgg16_cifar10\n"
        "from ridurre.datasets import load_digits\n"
        "from ridurre.schedules import linear\n"
        "from ridurre.sensitivity import scan, choose_ratios, SensitivityPruning\n"
        "for name in ridurre.__all__:\n"
        "    getattr(ridurre, name)\n"
        "for name in ('graph', 'rules', 'surgeon', 'importance', 'views', 'pruning', 'methods', 'selection',\n"
        "             'schedules', 'checkpoints', 'sensitivity', 'masks', 'prune_scores', 'ssvep', 'ssvep_pruning',\n"
        "             'metrics', 'models', 'datasets'):\n"
        "    getattr(ridurre, name)\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
