"""Realized speed-up in LiteRT and ONNX Runtime as instructions per inference (load-independent).

Usage::

    python bench/deploy_instructions.py [--models vgg16,resnet56] [--speedups 2,3] [--batches 1,8]
                                        [--runtimes litert,onnx] [--calls 1:3] [--calls 8:1]
                                        [--workdir DIR]

The same models as ``deploy_speedup.py speedup``: VGG16-CIFAR10 and ResNet-56 (random weights,
randomized BatchNorm statistics) pruned with L1, no finetuning, to 2x and 3x fewer MACs
(``Pruner("l1", pruning_factor=0.5, target_speedup=s, round_to=8)``, local ranking). Every model
is exported to LiteRT and ONNX with :func:`ridurre.deploy.export` (each export verified against
Keras). Then each artefact runs in a small child process that imports only its runtime (the
``ai_edge_litert`` interpreter with XNNPACK, or ONNX Runtime's CPU provider with all graph
optimizations, as :func:`ridurre.deploy.load_runtime` sets them up) and NumPy, with one thread,
under ``valgrind --tool=callgrind``, which counts the instructions executed (not seconds: the
count does not depend on what else the machine is doing).

One child per artefact, for all batch sizes: for each batch size it makes one warm-up inference
(first-call allocations, weight packing), then ``--calls B:N`` inferences (default 3 at batch 1,
1 above), each followed by ``os.getppid()``, a marker before which callgrind dumps and zeroes its
counters (``--dump-before=*getppid``). Each dumped part between two markers is one inference
(plus the few hundred instructions of the Python loop); start-up, imports, model loading and
warm-ups fall in the discarded parts. The median over the calls is reported. (This replaces
running the child twice, with N1 and N2 inferences, and taking ``(I(N2) - I(N1)) / (N2 - N1)``:
the same quantity at half the cost, since each start-up under callgrind takes about a minute
here. On VGG16's original ONNX export at batch 1 the two methods agree within 0.4 %: 59.6 and
59.8 million instructions.)

Batch 8 instead of issue 13's 32 by default: under callgrind one batch-32 inference of VGG16
(about 3 billion instructions) takes several minutes on this machine, and a child makes two.

Printed (markdown): instructions per inference of the original and pruned models, their ratio
(the speed-up in single-thread compute) and that ratio over the MACs reduction (issue 13's
target: at least 0.8 at 2x). Instructions are a proxy for single-thread compute time, not
latency: memory stalls, cache misses, instruction-level parallelism and multi-threading are not
captured. Under valgrind the runtimes see valgrind's CPU (AVX2, no AVX-512), which is the
machine's own instruction set here.

Needs valgrind (exit status 2 without it).
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_ROOT = Path(__file__).resolve().parents[1]

# The child process: only NumPy and the runtime, one thread, warm-up then N inferences.
CHILD = r"""
import os
import sys

import numpy as np

path, plan = sys.argv[1], [tuple(int(v) for v in arg.split(":")) for arg in sys.argv[2:]]
if path.endswith(".tflite"):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path, num_threads=1)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]

    def prepare(batch):
        shape = (batch, *(int(d) for d in inp["shape"][1:]))
        it.resize_tensor_input(inp["index"], shape)
        it.allocate_tensors()
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

        def run():
            it.set_tensor(inp["index"], x)
            it.invoke()
            return it.get_tensor(out["index"])

        return run

else:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]

    def prepare(batch):
        shape = (batch, *(int(d) for d in inp.shape[1:]))
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        return lambda: session.run(None, {inp.name: x})[0]

for batch, calls in plan:
    run = prepare(batch)
    run()  # warm-up: first-call allocations and weight packing
    os.getppid()  # marker: callgrind dumps its counts before every getppid
    for _ in range(calls):
        run()
        os.getppid()
"""


def _load():
    return "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def count_instructions(path, plan, workdir):
    """Instructions of each inference of ``path`` in one child under callgrind.

    ``plan`` is ``[(batch, calls), ...]``; for each batch size the child makes one warm-up
    inference, then ``calls`` inferences, each followed by a marker (``os.getppid``) before which
    callgrind dumps and zeroes its counters. Returns ``{batch: [instructions of each call]}``
    (the start-up, imports, loading and warm-ups fall in the discarded parts).
    """
    out = os.path.join(workdir, f"callgrind.{os.getpid()}.{time.monotonic_ns()}.out")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONPATH", None)  # the runtime and NumPy only
    cmd = ["nice", "-n", "10", "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    cmd += ["--dump-before=*getppid", "--trace-children=no", sys.executable, "-c", CHILD, os.fspath(path)]
    cmd += [f"{batch}:{calls}" for batch, calls in plan]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    files = glob.glob(out + "*")
    if proc.returncode != 0 or not files:
        raise RuntimeError(f"callgrind failed ({proc.returncode}) on {path}:\n{proc.stderr[-2000:]}")
    parts = {}
    for name in files:
        with open(name) as f:
            text = f.read()
        os.remove(name)
        part = re.search(r"^part:\s+(\d+)", text, re.M)
        total = re.search(r"^(?:totals|summary):\s+(\d+)", text, re.M)
        parts[int(part.group(1)) if part else 0] = int(total.group(1)) if total else 0
    # a marker can dump twice (getppid and its stub): the second part holds a few hundred instructions
    ordered = [parts[k] for k in sorted(parts) if parts[k] > 10_000]
    # parts: [start-up + warm-up, call, call, ..., warm-up of the next batch, call, ..., exit]
    result, i = {}, 1
    for batch, calls in plan:
        result[batch] = ordered[i : i + calls]
        i += calls + 1
    if i - 1 > len(ordered) or any(len(v) != c for v, (_, c) in zip(result.values(), plan)):
        raise RuntimeError(f"callgrind wrote {len(ordered)} parts for {path}, expected {i}")
    return result


def _plan(batches, specs):
    calls = {1: 3}
    for spec in specs:
        try:
            batch, n = (int(v) for v in spec.split(":"))
        except ValueError:
            raise SystemExit(f"--calls takes B:N such as 1:3, got {spec!r}") from None
        if n < 1:
            raise SystemExit(f"--calls {spec}: needs N >= 1")
        calls[batch] = n
    return [(b, calls.get(b, 1)) for b in batches]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg16,resnet56")
    parser.add_argument("--speedups", default="2,3")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--runtimes", default="litert,onnx")
    parser.add_argument("--calls", action="append", default=[], metavar="B:N")
    parser.add_argument("--workdir", default=None, help="keep the exports here (default: a temporary directory)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print(
            "deploy_instructions.py needs valgrind (callgrind counts the instructions): "
            "install it, e.g. apt-get install valgrind.",
            file=sys.stderr,
        )
        sys.exit(2)
    plan = _plan([int(b) for b in args.batches.split(",")], args.calls)
    runtimes = [r.strip() for r in args.runtimes.split(",")]
    for r in runtimes:
        if r not in ("litert", "onnx"):
            raise SystemExit(f"unknown runtime {r!r}: litert or onnx")

    sys.path.insert(0, str(_ROOT))
    sys.path.insert(0, str(_ROOT / "bench"))
    sys.path.insert(0, str(_ROOT / "tests"))
    import keras
    from deploy_speedup import _model, _prune

    from ridurre.deploy import export
    from ridurre.metrics import model_stats

    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    print("# deploy_instructions.py\n")
    print(f"{platform.node()}, {os.cpu_count()} cores, Keras {keras.__version__}, {valgrind}, {_load()} at the start\n")
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ridurre_icount_") as tmp:
        workdir = tmp if args.workdir is None else args.workdir
        os.makedirs(workdir, exist_ok=True)
        for name in args.models.split(","):
            model = _model(name)
            models = {"original": model}
            for s in [float(v) for v in args.speedups.split(",")]:
                t = time.perf_counter()
                models[f"{s:g}x"] = _prune(model, s)
                print(f"pruned {name} to {s:g}x fewer MACs in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            macs = {k: model_stats(m).total_macs for k, m in models.items()}
            paths = {}
            for k, m in models.items():
                for runtime in runtimes:
                    path = os.path.join(workdir, f"{name}_{k}.{'tflite' if runtime == 'litert' else 'onnx'}")
                    result = export(m, path, runtime, threads=1)
                    paths[(k, runtime)] = path
                    print(
                        f"exported {name} {k} to {runtime}: {result.size_bytes / 1e6:.1f} MB, max abs error "
                        f"{result.verification['max_abs_error']:.1e}",
                        file=sys.stderr,
                    )
            counts = {}
            for runtime in runtimes:
                for k in models:
                    t = time.perf_counter()
                    per_call = count_instructions(paths[(k, runtime)], plan, workdir)
                    for batch, values in per_call.items():
                        counts[(k, runtime, batch)] = statistics.median(values)
                    print(
                        f"{name} {k} {runtime}: instructions per call "
                        + "; ".join(f"batch {b}: " + ", ".join(f"{v:,}" for v in vs) for b, vs in per_call.items())
                        + f" ({time.perf_counter() - t:.0f} s, {_load()})",
                        file=sys.stderr,
                    )
                for batch, n in plan:
                    a = counts[("original", runtime, batch)]
                    for k in models:
                        if k == "original":
                            continue
                        b = counts[(k, runtime, batch)]
                        reduction = macs["original"] / macs[k]
                        rows.append(
                            (
                                name,
                                k,
                                reduction,
                                runtime,
                                batch,
                                n,
                                a,
                                b,
                                a / (batch * macs["original"]),
                                b / (batch * macs[k]),
                                a / b,
                            )
                        )
            keras.backend.clear_session()
    print(
        "| model | target | MACs fewer | runtime | batch | calls | original Minstr / inference | "
        "pruned Minstr / inference | instr / MAC (orig., pruned) | instructions fewer | "
        "instructions fewer / MACs reduction |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, k, reduction, runtime, batch, ns, a, b, ia, ib, ratio in rows:
        print(
            f"| {name} | {k} | {reduction:.2f}x | {runtime} | {batch} | {ns} | {a / 1e6:,.1f} | "
            f"{b / 1e6:,.1f} | {ia:.3f}, {ib:.3f} | {ratio:.2f}x | **{ratio / reduction:.2f}** |"
        )
    print(f"\n{time.perf_counter() - started:.0f} s in all, {_load()} at the end")


if __name__ == "__main__":
    main()
