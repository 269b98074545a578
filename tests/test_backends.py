"""The backends as the README claims them: every surgery test, and a representative set of the loop
and sensitivity tests, pass under JAX and PyTorch (CPU) too, each in a subprocess; the core never
imports TensorFlow."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT

# what runs under each backend, and at least how many tests that is (a selection that silently
# matches fewer tests, as a `-k` naming no test id once did, fails)
SELECTIONS = {
    # (exporting needs TensorFlow: the depth-pruning export test stays out)
    "surgery": (["tests/surgery/test_surgeon.py", "tests/surgery/test_branches.py", "-k", "not exports"], 61 + 10),
    # resume and its fingerprint, checkpoints from any directory, leftovers, finite checks, --layers,
    # steps sized to a MACs target: on a small CNN trained for one epoch
    "loop": (["tests/pruning/test_run_directory.py"], 12),
    # masked scan points against really pruned models, coupled residual groups, resuming a scan
    "sensitivity": (
        ["tests/sensitivity/test_sensitivity.py", "-k", "masked_point or masks_are_exact or interrupted_scan"],
        3,
    ),
}

# JAX compiles every new weight shape with XLA; without optimizations that takes a tenth of the time
# here (the tests compare values, not speed)
JAX_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _run(backend, part):
    selection, at_least = SELECTIONS[part]
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": ROOT}
    if backend == "jax":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + JAX_FLAGS).strip()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", *selection]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= at_least and "skipped" not in summary, summary


def _installed(name):
    return importlib.util.find_spec(name) is not None


@pytest.mark.slow
@pytest.mark.jax
@pytest.mark.skipif(not _installed("jax"), reason="jax is not installed (make install installs it)")
@pytest.mark.parametrize("part", sorted(SELECTIONS))
def test_under_jax(part):
    _run("jax", part)


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.skipif(not _installed("torch"), reason="torch is not installed (make install installs the CPU build)")
@pytest.mark.parametrize("part", sorted(SELECTIONS))
def test_under_torch(part):
    _run("torch", part)


def test_core_modules_do_not_import_tensorflow():
    code = (
        "import sys, os; os.environ['KERAS_BACKEND'] = 'jax'\n"
        "import ridurre.surgery, ridurre.graph, ridurre.rules, ridurre.criteria, ridurre.pruning.loop\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    if not _installed("jax"):
        pytest.skip("jax is not installed")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)
