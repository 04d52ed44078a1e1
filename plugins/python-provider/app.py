"""A Weir metric provider written in Python, built with componentize-py.

It reads a value from a ConfigMap key through the host's `cluster` import,
the same contract (and the same sandbox and limits) as a Rust plugin.
Configuration, in the metric's provider block:

    {"configMap": "checkout-metrics", "key": "success-rate"}

`"fault": "raise" | "loop" | "hoard"` makes it misbehave, for the sandbox
tests: an exception, an endless loop, unbounded allocation.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.metric_provider import Measurement, MeasurementPhase
from wit_world.imports import cluster, log
from wit_world.imports.weir_plugin_types import (
    PluginError_InvalidConfig,
    PluginError_NotFound,
)


def _config(metric):
    try:
        config = json.loads(metric.config)
    except ValueError as e:
        raise Err(PluginError_InvalidConfig(f"python provider configuration: {e}"))
    if not isinstance(config, dict):
        raise Err(PluginError_InvalidConfig("python provider configuration must be an object"))
    return config


def _misbehave(fault):
    if fault == "raise":
        raise RuntimeError("python provider: deliberate failure")
    if fault == "loop":
        while True:
            pass
    if fault == "hoard":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))


def _measure(run, metric):
    config = _config(metric)
    _misbehave(config.get("fault"))
    for field in ("configMap", "key"):
        if not isinstance(config.get(field), str):
            raise Err(PluginError_InvalidConfig(f"python provider: `{field}` is required"))
    target = cluster.ObjectRef("v1", "ConfigMap", run.namespace, config["configMap"])
    obj = json.loads(cluster.get(target))
    raw = (obj.get("data") or {}).get(config["key"])
    if raw is None:
        raise Err(PluginError_NotFound(f"ConfigMap {config['configMap']} has no key {config['key']!r}"))
    try:
        value = json.dumps(json.loads(raw))
    except ValueError:
        value = json.dumps(raw)
    log.log(log.Level.INFO, f"measured {config['key']} = {value}")
    return Measurement(MeasurementPhase.SUCCESSFUL, value, None, [], None)


class MetricProvider(exports.MetricProvider):
    def init(self, args):
        return None

    def run(self, run, metric):
        return _measure(run, metric)

    def resume(self, run, metric, measurement):
        return _measure(run, metric)

    def terminate(self, run, metric, measurement):
        return measurement

    def garbage_collect(self, run, metric, limit):
        return None

    def metadata(self, metric):
        return [("language", "python")]
