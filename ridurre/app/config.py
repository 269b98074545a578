"""Configuration of ``ridurre prune``: files, presets, environment overrides, validation.

Every option of ``ridurre prune`` has a place in a small two-level schema (``section.key``).
Values are resolved from five layers, each overriding the previous one::

    built-in defaults < preset (--preset) < config file (--config) < environment < command line

* A config file is YAML or JSON (``.json``), e.g.::

      strategy: {method: l1, ratio: 0.3, iterations: 3, finetune_epochs: 1}
      layers: {exclude: [predictions]}
      output: {dir: runs/l1}

* Presets ``conservative`` (about 10 % of the channels) and ``aggressive`` (about 70 %) ship as
  package data (``ridurre/presets/*.yaml``).
* Environment variables ``RIDURRE_<SECTION>_<KEY>`` override the file, e.g.
  ``RIDURRE_STRATEGY_RATIO=0.3`` or ``RIDURRE_LAYERS_EXCLUDE=predictions,fc1``; values are read
  as YAML scalars (``0.3``, ``true``, ``null``).

Unknown keys and out-of-range values raise :class:`ConfigError`, whose message names the key and
where the value came from (file path, environment variable, command-line option). The CLI turns
it into exit status 2. The effective configuration is saved as ``config.json`` with every run and
is itself a valid config file.

This module imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from importlib import resources

from ridurre._io import write_text_atomic
from ridurre._validation import LayerPatterns
from ridurre.criteria import canonical_name, criterion_names

__all__ = [
    "ConfigError",
    "Config",
    "DEFAULTS",
    "METHOD_NAMES",
    "PRESETS",
    "ENV_PREFIX",
    "read_config_file",
    "read_preset",
    "env_overrides",
    "resolve_config",
    "method_names",
]

ENV_PREFIX = "RIDURRE_"
METHOD_NAMES = ("random", "kmeans", "l1", "l2", "bn", "activation")
"""The methods of ridurre 1.0.0.dev; every criterion of :mod:`ridurre.criteria` is accepted too."""
PRESETS = ("conservative", "aggressive")


def method_names():
    """Every accepted ``strategy.method``: the classic names, then each registered criterion and alias.

    Example:
        >>> {"l1", "kmeans", "apoz", "bn_scale"} <= set(method_names())
        True
    """
    return list(dict.fromkeys(METHOD_NAMES + tuple(criterion_names(aliases=True))))


class ConfigError(ValueError):
    """A bad option or input: the message names the key (or option) and its source.

    The CLI prints it and exits with status 2 without writing anything.

    Example:
        >>> str(ConfigError("strategy.ratio", "a number in (0, 1)", 1.5, "run.yaml"))
        'strategy.ratio: expected a number in (0, 1), got 1.5 (from run.yaml)'
    """

    def __init__(self, key, expected=None, got=None, source=None, *, message=None):
        self.key, self.source = key, source
        if message is None:
            message = f"{key}: expected {expected}, got {got!r}"
        if source:
            message += f" (from {source})"
        super().__init__(message)


# -- value checks: each returns the normalized value or raises ValueError(expected) -----------


def _number(lo, hi, lo_open=True, hi_open=True, optional=True):
    text = f"a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    def check(v):
        if v is None and optional:
            return None
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if not ok:
            raise ValueError(text + (" or null" if optional else ""))
        return float(v)

    return check


def _integer(minimum, optional=False):
    def check(v):
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"an integer >= {minimum}" + (" or null" if optional else ""))
        return int(v)

    return check


def _method(v):
    if isinstance(v, str) and v.lower() in method_names():
        return v.lower()
    raise ValueError("one of " + ", ".join(repr(m) for m in method_names()))


def _choice(*options):
    def check(v):
        if isinstance(v, str) and v.lower() in [str(o).lower() for o in options if o is not None]:
            return v.lower()
        if v is None and None in options:
            return None
        raise ValueError("one of " + ", ".join("null" if o is None else repr(o) for o in options))

    return check


def _string(optional=True):
    def check(v):
        if v is None and optional:
            return None
        if not isinstance(v, str) or not v:
            raise ValueError("a non-empty string" + (" or null" if optional else ""))
        return v

    return check


def _boolean(v):
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


def _verify(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("exact", "on", "off"):
        return {"exact": "exact", "on": True, "off": False}[v.lower()]
    raise ValueError("true, false or 'exact'")


RUNTIMES = ("keras", "litert", "onnx", "saved_model")


def _runtimes(v):
    if isinstance(v, str):
        v = [p.strip().lower() for p in v.split(",") if p.strip()]
    if not isinstance(v, list) or not v or not all(isinstance(r, str) and r.lower() in RUNTIMES for r in v):
        raise ValueError("a list of runtimes among " + ", ".join(RUNTIMES) + " (or a comma-separated string)")
    return list(dict.fromkeys(r.lower() for r in v))


def _patterns(v):
    if v is None:
        return None
    if isinstance(v, str):
        v = [p.strip() for p in v.split(",") if p.strip()]
    if not isinstance(v, list) or not all(isinstance(p, str) and p for p in v):
        raise ValueError("a list of layer-name regular expressions (or a comma-separated string)")
    try:
        LayerPatterns(v, "layers")
    except ValueError as exc:
        raise ValueError(f"valid regular expressions ({str(exc).split(': ', 1)[1]})") from None
    return v or None


SCHEMA = {
    "model": {"path": _string(), "custom_objects": _string(), "unsafe": _boolean},
    "data": {
        "source": _string(optional=False),
        "normalize": _choice("auto", "unit", "meanstd", "none"),
        "validation_split": _number(0, 1, lo_open=False, optional=False),
        "activation_samples": _integer(1),
    },
    "strategy": {
        "method": _method,
        "ratio": _number(0, 1),
        "head_ratio": _number(0, 1),
        "target_macs": _number(0, 1),
        "target_latency": _number(0, 1),
        "blocks": _number(0, 1),
        "step": _number(0, 1),
        "iterations": _integer(1),
        "finetune_epochs": _integer(0),
        "ranking": _choice("local", "global", "isomorphic"),
        "scope": _choice("group", "producers"),
        "reduction": _choice("mean", "sum", "max", "prod", "first"),
        "normalizer": _choice("mean", "max", "sum", "gaussian", "lamp", "none"),
        "max_metric_drop": _number(0, 1, lo_open=False, hi_open=False),
        "on_metric_drop": _choice("rollback", "stop"),
        "keep_best": _boolean,
        "round_to": _integer(1, optional=True),
        "min_channels": _integer(1),
        "max_fraction_per_layer": _number(0, 1, hi_open=False),
        "activation_kind": _choice("mean", "apoz"),
        "seed": _integer(0),
        "latency_table": _string(),
    },
    "finetune": {
        "batch_size": _integer(1),
        "learning_rate": _number(0, 10),
    },
    "sparse": {
        "epochs": _integer(0),
        "method": _choice("bn", "group", "growing"),
        "strength": _number(0, 1e6, lo_open=False, optional=False),
        "alpha": _number(1, 1e6, lo_open=False, optional=False),
    },
    "layers": {"include": _patterns, "exclude": _patterns},
    "output": {"dir": _string(optional=False)},
    "report": {"runtimes": _runtimes},
    "validation": {"verify": _verify, "dry_run": _boolean, "require_target": _boolean},
    "logging": {"level": _choice("debug", "info", "warning", "error")},
}

DEFAULTS = {
    "model": {"path": None, "custom_objects": None, "unsafe": False},
    "data": {"source": "digits", "normalize": "auto", "validation_split": 0.1, "activation_samples": 256},
    "strategy": {
        "method": "l1",
        "ratio": None,
        "head_ratio": None,
        "target_macs": None,
        "target_latency": None,
        "blocks": None,
        "step": None,
        "iterations": 3,
        "finetune_epochs": 1,
        "ranking": "local",
        "scope": "group",
        "reduction": "mean",
        "normalizer": "mean",
        "max_metric_drop": None,
        "on_metric_drop": "rollback",
        "keep_best": False,
        "round_to": None,
        "min_channels": 1,
        "max_fraction_per_layer": None,
        "activation_kind": "mean",
        "seed": 0,
        "latency_table": None,
    },
    "finetune": {"batch_size": 32, "learning_rate": 0.001},
    "sparse": {"epochs": 0, "method": "group", "strength": 0.01, "alpha": 4.0},
    "layers": {"include": None, "exclude": None},
    "output": {"dir": "ridurre_output"},
    "report": {"runtimes": ["keras", "litert", "onnx"]},
    "validation": {"verify": True, "dry_run": False, "require_target": False},
    "logging": {"level": "info"},
}
"""Built-in defaults. Without ``ratio``, ``target_macs`` and ``target_latency``, a run removes 30 % of
the channels."""

DEFAULT_RATIO = 0.3

RUN_INDEPENDENT = frozenset(
    {
        "output.dir",
        "logging.level",
        "validation.dry_run",
        "validation.require_target",
        "model.path",  # where the model and data are may change; their contents are in state.json's fingerprint
        "model.custom_objects",
        "model.unsafe",
        "data.source",
    }
)
"""Keys a resumed run may change: they do not change what it computes (or what it computes is
compared through the fingerprint of its model and data)."""


def _check_value(section, key, value, source):
    try:
        return SCHEMA[section][key](value)
    except ValueError as exc:
        raise ConfigError(f"{section}.{key}", str(exc), value, source) from None


def _unknown_key(section, key):
    close = difflib.get_close_matches(str(key), SCHEMA[section], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{section}.{key}: unknown key{hint}; known keys of {section!r}: {', '.join(SCHEMA[section])}"


def validate(data, source):
    """Check a nested ``{section: {key: value}}`` mapping and return a normalized copy.

    Example:
        >>> validate({"strategy": {"ratio": 0.25}}, "example")
        {'strategy': {'ratio': 0.25}}
        >>> try:
        ...     validate({"strategy": {"ratoi": 0.25}}, "run.yaml")
        ... except ConfigError as exc:
        ...     print(str(exc)[:58])
        strategy.ratoi: unknown key (did you mean 'ratio'?); known
    """
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("<top level>", "a mapping of sections", type(data).__name__, source)
    out = {}
    for section, values in data.items():
        if section not in SCHEMA:
            close = difflib.get_close_matches(str(section), SCHEMA, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                str(section),
                source=source,
                message=(f"{section}: unknown section{hint}; known sections: {', '.join(SCHEMA)}"),
            )
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(str(section), "a mapping of keys", values, source)
        for key, value in values.items():
            if key not in SCHEMA[section]:
                raise ConfigError(f"{section}.{key}", source=source, message=_unknown_key(section, key))
            out.setdefault(section, {})[key] = _check_value(section, key, value, source)
    return out


def _parse_text(text, path):
    import yaml

    try:
        if str(path).endswith(".json"):
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("--config", message=f"--config: {path} is not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError("--config", message=f"--config: {path} is not valid YAML{where}: {problem}") from None


def read_config_file(path):
    """Read and validate a YAML or JSON config file.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "run.yaml")
        >>> _ = open(path, "w").write("strategy:\\n  method: kmeans\\n  ratio: 0.4\\n")
        >>> read_config_file(path)["strategy"]
        {'method': 'kmeans', 'ratio': 0.4}
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError("--config", message=f"--config: no such file: {path}")
    with open(path, encoding="utf-8") as f:
        return validate(_parse_text(f.read(), path), path)


def read_preset(name):
    """The values of a shipped preset (``conservative`` or ``aggressive``).

    Example:
        >>> read_preset("aggressive")["strategy"]["ratio"]
        0.7
    """
    if name not in PRESETS:
        raise ConfigError("--preset", f"one of {', '.join(PRESETS)}", name)
    text = resources.files("ridurre.app").joinpath("presets", f"{name}.yaml").read_text(encoding="utf-8")
    return validate(_parse_text(text, f"{name}.yaml"), f"preset {name!r}")


def env_overrides(environ=None):
    """Read ``RIDURRE_<SECTION>_<KEY>`` variables into a validated nested mapping.

    Values are YAML scalars; list-valued keys also accept a comma-separated string.

    Example:
        >>> env_overrides({"RIDURRE_STRATEGY_RATIO": "0.3", "HOME": "/root"})
        {'strategy': {'ratio': 0.3}}
    """
    import yaml

    environ = os.environ if environ is None else environ
    out = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        section = next((s for s in SCHEMA if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(
                var,
                source=f"environment variable {var}",
                message=(
                    f"{var}: unknown section; expected RIDURRE_<SECTION>_<KEY> with a section among "
                    f"{', '.join(s.upper() for s in SCHEMA)}"
                ),
            )
        key = rest[len(section) + 1 :]
        if key not in SCHEMA[section]:
            raise ConfigError(
                f"{section}.{key}", source=f"environment variable {var}", message=_unknown_key(section, key)
            )
        raw = environ[var]
        if key in ("include", "exclude") and not raw.lstrip().startswith("["):
            value = raw.strip() or None  # comma-separated regular expressions, kept verbatim
        else:
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError:
                value = raw
        out.setdefault(section, {})[key] = _check_value(section, key, value, f"environment variable {var}")
    return out


class Config:
    """The effective configuration of a run and where each value came from.

    Example:
        >>> config = resolve_config(cli={"strategy": {"ratio": 0.5}}, environ={})
        >>> config["strategy.ratio"], config.source("strategy.ratio"), config.source("strategy.method")
        (0.5, 'command line', 'default')
    """

    def __init__(self, values, sources):
        self.values = values
        self.sources = sources

    def __getitem__(self, dotted):
        section, key = dotted.split(".", 1)
        return self.values[section][key]

    def source(self, dotted):
        """Where the value of ``section.key`` came from."""
        return self.sources.get(dotted, "default")

    def to_dict(self):
        """A deep copy of the values: ``{section: {key: value}}`` (valid as a config file)."""
        return copy.deepcopy(self.values)

    def limits(self):
        """``(ratio, target_macs, step)`` of the run, with the defaults filled in.

        ``ratio`` caps the share of prunable channels removed, ``target_macs`` the share of the
        original MACs kept (``strategy.target_latency``, read directly, the share of the latency a
        latency table predicts); ``step`` is the share of the remaining channels one iteration
        removes: ``1 - (1 - ratio) ** (1 / iterations)``, or, for a MACs or latency target only,
        ``1 - target ** (1 / (2 * iterations))`` (MACs shrink about quadratically with width).
        A derived step is only the first guess: the run sizes each step to reach the limits in
        ``iterations`` steps (see :meth:`sized_steps`).
        """
        ratio, target, step = self["strategy.ratio"], self["strategy.target_macs"], self["strategy.step"]
        latency = self["strategy.target_latency"]
        n = self["strategy.iterations"]
        if ratio is None and target is None and latency is None:
            ratio = DEFAULT_RATIO
        if step is None:
            kept = min(v for v in (target, latency) if v is not None) if ratio is None else None
            step = 1.0 - (1.0 - ratio) ** (1.0 / n) if ratio is not None else 1.0 - kept ** (1.0 / (2 * n))
        return ratio, target, step

    def head_step(self):
        """The share of every attention layer's heads one iteration removes: ``1 - (1 -
        head_ratio) ** (1 / iterations)``, or ``None`` when ``strategy.head_ratio`` is not set
        (heads are then kept; head dimensions follow the channel ratio).

        Example:
            >>> config = resolve_config(cli={"strategy": {"head_ratio": 0.75, "iterations": 2}}, environ={})
            >>> round(config.head_step(), 3)
            0.5
        """
        ratio = self["strategy.head_ratio"]
        return None if ratio is None else 1.0 - (1.0 - ratio) ** (1.0 / self["strategy.iterations"])

    def sized_steps(self):
        """Whether each iteration's step is sized to reach the limits at the last iteration: when no
        ``strategy.step`` is given (a given step is used as it is).

        Example:
            >>> resolve_config(cli={"strategy": {"target_macs": 0.5}}, environ={}).sized_steps()
            True
        """
        return self["strategy.step"] is None

    def differences(self, saved, ignore=RUN_INDEPENDENT):
        """``["section.key: X there, Y here", ...]`` between these values and ``saved`` (another
        run's ``config.json``), leaving out the keys of ``ignore``.

        Example:
            >>> config = resolve_config(cli={"strategy": {"method": "l1"}}, environ={})
            >>> saved = config.to_dict()
            >>> saved["strategy"]["method"] = "random"
            >>> config.differences(saved)
            ["strategy.method: 'random' there, 'l1' here"]
        """
        out = []
        for section, keys in self.values.items():
            for key, value in keys.items():
                dotted = f"{section}.{key}"
                if dotted in ignore:
                    continue
                then = (saved.get(section) or {}).get(key, DEFAULTS[section][key])
                if then != value:
                    out.append(f"{dotted}: {then!r} there, {value!r} here")
        return out

    def criterion(self):
        """The registry name of the criterion the run uses (``strategy.method``; the classic
        ``activation`` method with ``strategy.activation_kind: apoz`` is the ``apoz`` criterion).

        Example:
            >>> resolve_config(cli={"strategy": {"method": "bn"}}, environ={}).criterion()
            'bn_scale'
        """
        name = canonical_name(self["strategy.method"])
        if name == "activation_mean" and self["strategy.activation_kind"] == "apoz":
            return "apoz"
        return name

    def criterion_options(self):
        """The group options of a weight criterion (``strategy.scope``, ``reduction``, ``normalizer``),
        or ``{}`` for a criterion without them (random, activations).

        Example:
            >>> resolve_config(cli={"strategy": {"normalizer": "lamp"}}, environ={}).criterion_options()
            {'scope': 'group', 'reduction': 'mean', 'normalizer': 'lamp'}
        """
        from ridurre.criteria import criterion_class

        if not getattr(criterion_class(self.criterion()), "scoped", False):
            return {}
        normalizer = self["strategy.normalizer"]
        return {
            "scope": self["strategy.scope"],
            "reduction": self["strategy.reduction"],
            "normalizer": None if normalizer == "none" else normalizer,
        }

    def save(self, path):
        """Write the values as JSON, atomically."""
        write_text_atomic(path, json.dumps(self.values, indent=2) + "\n")


def _merge(values, sources, layer, source):
    for section, items in layer.items():
        for key, value in items.items():
            values[section][key] = value
            sources[f"{section}.{key}"] = source


def resolve_config(config_file=None, preset=None, environ=None, cli=None, cli_flags=None):
    """Merge defaults < preset < config file < environment < command line into a :class:`Config`.

    Args:
        config_file: path of a YAML/JSON file, or None.
        preset: ``"conservative"``, ``"aggressive"`` or None.
        environ: the environment (default ``os.environ``); only ``RIDURRE_*`` variables are read.
        cli: ``{section: {key: value}}`` from the command line; ``None`` values are "not given".
        cli_flags: ``{"section.key": "--flag"}``, to name the option in error messages and sources.

    Raises:
        ConfigError: an unknown key or a bad value, naming the key and its source.

    Example:
        >>> config = resolve_config(preset="conservative", environ={"RIDURRE_STRATEGY_RATIO": "0.2"},
        ...                         cli={"strategy": {"method": "kmeans", "ratio": None}})
        >>> config["strategy.ratio"], config.source("strategy.ratio"), config["strategy.method"]
        (0.2, 'environment variable RIDURRE_STRATEGY_RATIO', 'kmeans')
    """
    values, sources = copy.deepcopy(DEFAULTS), {}
    if preset is not None:
        _merge(values, sources, read_preset(preset), f"preset {preset!r}")
    if config_file is not None:
        _merge(values, sources, read_config_file(config_file), os.fspath(config_file))
    env = env_overrides(environ)
    for section, items in env.items():
        for key, value in items.items():
            values[section][key] = value
            sources[f"{section}.{key}"] = f"environment variable {ENV_PREFIX}{section.upper()}_{key.upper()}"
    flags = cli_flags or {}
    for section, items in (cli or {}).items():
        for key, value in items.items():
            if value is None:
                continue
            flag = flags.get(f"{section}.{key}")
            source = f"command-line option {flag}" if flag else "command line"
            _merge(values, sources, validate({section: {key: value}}, source), source)
    return Config(values, sources)
