"""`python -m berth.plugins.tpu_probe PORT METRIC...`: ask libtpu's runtime metrics service on
localhost:PORT (run inside the chip holder's network namespace, see tpu_metrics) for each
metric; prints `{metric: base64 MetricResponse}` as JSON. Raw bytes both ways: the caller
encodes and decodes the protobuf messages."""

from __future__ import annotations

import base64
import json
import sys

import grpc

from berth.plugins.tpu_metrics import encode_metric_request

METHOD = "/tpu.monitoring.runtime.RuntimeMetricService/GetRuntimeMetric"


def main(argv: list[str]) -> int:
    port, metrics = argv[0], argv[1:]
    out: dict[str, str] = {}
    with grpc.secure_channel(f"localhost:{port}", grpc.local_channel_credentials()) as channel:
        call = channel.unary_unary(METHOD)
        for name in metrics:
            reply = call(encode_metric_request(name), timeout=3)
            out[name] = base64.b64encode(reply).decode()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
