from __future__ import annotations

import logging

from berth.config import load_config
from berth.logctx import ContextFilter
from berth.telemetry.logshipping import JSONFormatter, LokiHandler
from berth.daemon.server import configure_logging


def test_loki_and_json_logging_follow_the_config() -> None:
    config = load_config(env={}, overrides={
        "agent.rpc-allow-plain": True, "logging.format": "json",
        "logging.loki-endpoint": "http://127.0.0.1:9"})
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(config)
        loki = [h for h in root.handlers if isinstance(h, LokiHandler)]
        assert len(loki) == 1 and loki[0].push_url == "http://127.0.0.1:9/loki/api/v1/push"
        assert all(isinstance(h.formatter, JSONFormatter) for h in root.handlers)
        assert all(any(isinstance(f, ContextFilter) for f in h.filters) for h in root.handlers)
    finally:
        for handler in root.handlers:
            if handler not in saved[0]:
                handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
