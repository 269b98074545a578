"""Fuzz the channel surgeon with thousands of random graphs (the nightly mode of
``tests/surgery/test_fuzz.py``, which ``make test`` runs on a fixed set of 200).

Every graph is drawn from the layer kinds of ``tests/fuzz_graphs.py`` (every rule of
``ridurre.rules``, nested models, shared layers); random channels of random prunable groups are
deleted and the output is compared with the model whose same channels are zeroed. A failure is
shrunk by hypothesis to a minimal graph, whose layers are printed.

    .venv/bin/python bench/fuzz_surgeon.py --examples 3000 --seed 0
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=3000, help="random graphs to try (default: 3000)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default: 0)")
    args = parser.parse_args()
    os.environ["RIDURRE_FUZZ_EXAMPLES"] = str(args.examples)
    os.environ["RIDURRE_FUZZ_SEED"] = str(args.seed)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.chdir(ROOT)
    import pytest

    started = time.perf_counter()
    code = pytest.main(
        [
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore",
            "--hypothesis-show-statistics",
            "tests/surgery/test_fuzz.py::test_deleted_equals_zeroed_on_random_graphs",
        ]
    )
    seconds = time.perf_counter() - started
    verdict = "no failure" if code == 0 else "FAILED (the minimal graph is printed above)"
    print("\n| graphs | seed | result | wall time |\n|---:|---:|---|---:|")
    print(f"| {args.examples} | {args.seed} | {verdict} | {seconds:.0f} s |")
    sys.exit(int(code))
