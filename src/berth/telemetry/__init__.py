"""Watching the node: the stats loop, the Prometheus registry and its collectors, the internal
HTTP server (/metrics, /health) and log shipping."""
from berth.telemetry.logshipping import ContainerOutputShipper, JSONFormatter, LokiHandler
from berth.telemetry.metrics import Holdings
from berth.telemetry.stats_loop import Telemetry

__all__ = [
    "ContainerOutputShipper",
    "Holdings",
    "JSONFormatter",
    "LokiHandler",
    "Telemetry",
]
