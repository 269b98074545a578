"""The core never imports TensorFlow: the surgery tests also pass under JAX (and torch if present)."""

import importlib.util
import os
import subprocess
import sys

import pytest
from helpers import ROOT  # noqa: E402


def _run_surgery_tests(backend):
    env = {**os.environ, "KERAS_BACKEND": backend}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/surgery/test_surgeon.py",
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " passed" in result.stdout


@pytest.mark.jax
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_surgery_under_jax():
    _run_surgery_tests("jax")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is optional (pip install ridurre[torch])")
def test_surgery_under_torch():
    _run_surgery_tests("torch")


def test_core_modules_do_not_import_tensorflow():
    code = (
        "import sys, os; os.environ['KERAS_BACKEND'] = 'jax'\n"
        "import ridurre.surgery, ridurre.graph, ridurre.rules, ridurre.criteria, ridurre.pruning.loop\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)
