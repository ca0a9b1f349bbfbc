"""libtpu's runtime metrics messages built with the protobuf library itself (from a descriptor
written here after tpu_info's tpu_metric_service.proto), and a stand-in metrics service: a
real gRPC server answering GetRuntimeMetric like libtpu, for machines without TPUs.

`python tests/support/libtpu.py PORT CHIP_PATH... -- DUTY,... HBM_USED,... HBM_TOTAL,...`
holds the chip paths open (as libtpu holds /dev/accel*) and serves those per-device values
on localhost:PORT; run it inside a container's netns with nsenter."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from concurrent import futures
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_POOL = descriptor_pool.DescriptorPool()


def _build() -> None:
    fdp = descriptor_pb2.FileDescriptorProto(name="berth_test_tpu_metric_service.proto",
                                             package="tpu.monitoring.runtime", syntax="proto3")

    def message(name: str, fields: Sequence[tuple[str, int, int, str, int | None]],
                oneofs: Sequence[str] = (), repeated: Sequence[str] = ()) -> None:
        m = fdp.message_type.add(name=name)
        for oneof in oneofs:
            m.oneof_decl.add(name=oneof)
        for fname, number, ftype, type_name, oneof_index in fields:
            f = m.field.add(name=fname, number=number, type=ftype,  # type: ignore[arg-type]
                            label=_F.LABEL_REPEATED if fname in repeated else _F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = f".tpu.monitoring.runtime.{type_name}"
            if oneof_index is not None:
                f.oneof_index = oneof_index

    message("AttrValue", [("string_attr", 1, _F.TYPE_STRING, "", 0),
                          ("int_attr", 3, _F.TYPE_INT64, "", 0),
                          ("kvlist_attr", 6, _F.TYPE_MESSAGE, "KeyValueList", 0)], ["attr"])
    message("KeyValueList", [("attributes", 1, _F.TYPE_MESSAGE, "Attribute", None)],
            repeated=["attributes"])
    message("Attribute", [("key", 1, _F.TYPE_STRING, "", None),
                          ("value", 2, _F.TYPE_MESSAGE, "AttrValue", None)])
    message("Gauge", [("as_double", 1, _F.TYPE_DOUBLE, "", 0),
                      ("as_int", 2, _F.TYPE_INT64, "", 0)], ["value"])
    message("Metric", [("attribute", 1, _F.TYPE_MESSAGE, "Attribute", None),
                       ("gauge", 3, _F.TYPE_MESSAGE, "Gauge", None)])
    message("TPUMetric", [("name", 1, _F.TYPE_STRING, "", None),
                          ("description", 2, _F.TYPE_STRING, "", None),
                          ("metrics", 3, _F.TYPE_MESSAGE, "Metric", None)], repeated=["metrics"])
    message("MetricRequest", [("metric_name", 1, _F.TYPE_STRING, "", None)])
    message("MetricResponse", [("metric", 1, _F.TYPE_MESSAGE, "TPUMetric", None)])
    _POOL.Add(fdp)


_build()


def message_class(name: str) -> Any:
    return message_factory.GetMessageClass(
        _POOL.FindMessageTypeByName(f"tpu.monitoring.runtime.{name}"))


def metric_response(name: str, values: Sequence[float | int], *,
                    ordinal_kvlist: bool = False) -> bytes:
    """A MetricResponse with one gauge per device id 0..n-1 (ints as as_int, floats as
    as_double); `ordinal_kvlist`: the id as a `device_ordinal` kvlist, as newer libtpus do."""
    response = message_class("MetricResponse")()
    response.metric.name = name
    for device, value in enumerate(values):
        metric = response.metric.metrics.add()
        metric.attribute.key = "device-id"
        if ordinal_kvlist:
            attr = metric.attribute.value.kvlist_attr.attributes.add()
            attr.key, attr.value.string_attr = "device_ordinal", str(device)
        else:
            metric.attribute.value.int_attr = device
        if isinstance(value, int):
            metric.gauge.as_int = value
        else:
            metric.gauge.as_double = value
    return bytes(response.SerializeToString())


def serve(port: int, chip_paths: Sequence[str], series: dict[str, list[float | int]]) -> None:
    import grpc

    held = [open(p, "rb") for p in chip_paths]  # noqa: SIM115 - held for the server's life
    request_class = message_class("MetricRequest")

    def get(request: bytes, context: Any) -> bytes:
        name = request_class.FromString(request).metric_name
        return metric_response(name, series.get(name, []))

    handler = grpc.method_handlers_generic_handler(
        "tpu.monitoring.runtime.RuntimeMetricService",
        {"GetRuntimeMetric": grpc.unary_unary_rpc_method_handler(get)})
    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[handler])
    server.add_secure_port(f"localhost:{port}", grpc.local_server_credentials())
    server.start()
    print("serving", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        for f in held:
            f.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    split = args.index("--")
    duty, used, total = (v.split(",") for v in args[split + 1:split + 4])
    serve(int(args[0]), args[1:split], {
        "tpu.runtime.tensorcore.dutycycle.percent": [float(v) for v in duty],
        "tpu.runtime.hbm.memory.usage.bytes": [int(v) for v in used],
        "tpu.runtime.hbm.memory.total.bytes": [int(v) for v in total]})
