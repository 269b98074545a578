"""Deployment: export pruned models to LiteRT, ONNX or a SavedModel, run and time them there,
and prune for the speed they reach there.

* :func:`export` writes a verified (optionally int8) export; :func:`load_runtime` runs one.
* :func:`measure_deployed` times Keras models and their exports side by side in each runtime.
* :class:`LatencyTable` measures the latency each channel group saves per channel in a runtime,
  and :func:`choose_round_to` the channel multiple a runtime rewards; a ``LatencyTable`` given to
  the pruning loop (``cost_model=``) ranks groups by measured time saved and makes
  ``target_speedup`` a measured speed-up.

The converters and runtimes (the ``ridurre[deploy]`` extra) are imported only when used.
"""

from ridurre._lazy import lazy_exports

_EXPORTS = {
    "export": "ridurre.deploy.exporter:export",
    "ExportResult": "ridurre.deploy.exporter:ExportResult",
    "ExportError": "ridurre.deploy.exporter:ExportError",
    "load_runtime": "ridurre.deploy.runtimes:load_runtime",
    "FORMATS": "ridurre.deploy.runtimes:FORMATS",
    "canonical_format": "ridurre.deploy.runtimes:canonical_format",
    "missing_packages": "ridurre.deploy.runtimes:missing_packages",
    "measure_deployed": "ridurre.deploy.latency:measure_deployed",
    "LatencyTable": "ridurre.deploy.latency:LatencyTable",
    "choose_round_to": "ridurre.deploy.latency:choose_round_to",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
