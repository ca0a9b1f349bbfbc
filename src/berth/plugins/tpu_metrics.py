"""TPU utilization from libtpu's runtime metrics service, the only place it is reported.

libtpu serves `tpu.monitoring.runtime.RuntimeMetricService` (gRPC, local credentials) on
`localhost:8431` inside the process that holds the chips (the tool `tpu-info` reads the same).
So the agent finds, for each chip, the process holding its device node open (`/proc/*/fd`),
and asks that process's service from inside its network namespace (`nsenter --net`, running
`berth.plugins.tpu_probe`). libtpu numbers a process's devices 0..n-1 in the order of its
visible chips, which the plugin passes in host index order (TPU_VISIBLE_CHIPS); a metric
reported per core (k entries per chip) is folded into its chip (summed bytes, mean percent).

The protobuf wire format of the three messages used is decoded here (pure), so no generated
code is needed: MetricRequest{1: metric_name}, MetricResponse{1: TPUMetric{3: repeated
Metric{1: Attribute{1: key, 2: AttrValue{1: string_attr, 3: int_attr, 6: kvlist}},
3: Gauge{1: as_double, 2: as_int}}}}.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import struct
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path

log = logging.getLogger(__name__)

DUTY_CYCLE = "tpu.runtime.tensorcore.dutycycle.percent"
HBM_USAGE = "tpu.runtime.hbm.memory.usage.bytes"
HBM_TOTAL = "tpu.runtime.hbm.memory.total.bytes"
METRICS = (DUTY_CYCLE, HBM_USAGE, HBM_TOTAL)
DEFAULT_PORT = 8431
PROBE_TIMEOUT_S = 5.0

Fields = dict[int, list[int | bytes]]


class WireError(ValueError):
    """Bytes that are not the protobuf message expected."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def parse_fields(data: bytes) -> Fields:
    """One protobuf message: field number → its values (ints for varint/fixed, else bytes)."""
    fields: Fields = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            if pos + 8 > len(data):
                raise WireError("truncated fixed64")
            value, pos = struct.unpack_from("<Q", data, pos)[0], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise WireError("truncated field")
            value, pos = data[pos:pos + size], pos + size
        elif wire == 5:
            if pos + 4 > len(data):
                raise WireError("truncated fixed32")
            value, pos = struct.unpack_from("<I", data, pos)[0], pos + 4
        else:
            raise WireError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _one(fields: Fields, number: int) -> bytes:
    value = fields.get(number, [b""])[-1]
    if not isinstance(value, bytes):
        raise WireError(f"field {number} is not a message")
    return value


def encode_metric_request(metric_name: str) -> bytes:
    name = metric_name.encode()
    out = bytearray([0x0A])  # field 1, length-delimited
    size = len(name)
    while size > 0x7F:
        out.append((size & 0x7F) | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out) + name


def _device_id(attr_value: Fields) -> int | None:
    if 3 in attr_value and isinstance(attr_value[3][-1], int):
        return int(attr_value[3][-1])
    if 1 in attr_value:
        text = _one(attr_value, 1).decode(errors="replace")
        return int(text) if text.isdigit() else None
    if 6 in attr_value:  # kvlist: {device_ordinal: ...}
        for raw in parse_fields(_one(attr_value, 6)).get(1, []):
            attr = parse_fields(raw) if isinstance(raw, bytes) else {}
            if _one(attr, 1) == b"device_ordinal":
                return _device_id(parse_fields(_one(attr, 2)))
    return None


def decode_metric_response(data: bytes) -> dict[int, Decimal]:
    """Device id → gauge value of one `MetricResponse` (entries without either are skipped)."""
    metric = parse_fields(_one(parse_fields(data), 1))
    out: dict[int, Decimal] = {}
    for raw in metric.get(3, []):
        entry = parse_fields(raw) if isinstance(raw, bytes) else {}
        attr = parse_fields(_one(entry, 1))
        device = _device_id(parse_fields(_one(attr, 2)))
        gauge = parse_fields(_one(entry, 3))
        if device is None:
            continue
        if 1 in gauge:
            value = Decimal(repr(struct.unpack("<d", struct.pack("<Q", gauge[1][-1]))[0]))
        elif 2 in gauge:
            value = Decimal(int(gauge[2][-1]))
        else:
            continue
        out[device] = value
    return out


def chip_holders(chip_paths: Mapping[str, Path], proc_root: Path = Path("/proc")
                 ) -> dict[int, list[str]]:
    """PID → the chips (device ids, in `chip_paths` order) whose device node it holds open."""
    wanted = {str(path): dev for dev, path in chip_paths.items()}
    order = list(chip_paths)
    held: dict[int, set[str]] = {}
    try:
        pids = [int(p) for p in os.listdir(proc_root) if p.isdigit()]
    except OSError:
        return {}
    for pid in pids:
        fd_dir = proc_root / str(pid) / "fd"
        try:
            links = [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]
        except OSError:
            continue  # gone, or not ours to read
        chips = {wanted[link] for link in links if link in wanted}
        if chips:
            held[pid] = chips
    return {pid: sorted(chips, key=order.index) for pid, chips in held.items()}


def per_chip(values: Mapping[int, Decimal], chips: Sequence[str], *, summed: bool
             ) -> dict[str, Decimal]:
    """libtpu device ids → the holder's chips; k entries per chip (per core) are folded."""
    if not chips or not values or len(values) % len(chips):
        return {}
    per = len(values) // len(chips)
    ordered = [values[k] for k in sorted(values)]
    out: dict[str, Decimal] = {}
    for index, chip in enumerate(chips):
        group = ordered[index * per:(index + 1) * per]
        total = sum(group, Decimal(0))
        out[chip] = total if summed else total / len(group)
    return out


async def probe(pid: int, port: int = DEFAULT_PORT, *, proc_root: Path = Path("/proc"),
                timeout: float = PROBE_TIMEOUT_S) -> dict[str, bytes]:
    """The raw MetricResponse of each of METRICS from the service in `pid`'s netns."""
    argv = ["nsenter", f"--net={proc_root / str(pid) / 'ns' / 'net'}", sys.executable, "-m",
            "berth.plugins.tpu_probe", str(port), *METRICS]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise OSError(f"libtpu metrics of pid {pid}: no answer in {timeout}s") from None
    if proc.returncode != 0:
        raise OSError(f"libtpu metrics of pid {pid}: {err.decode(errors='replace').strip()}")
    return {name: base64.b64decode(raw) for name, raw in json.loads(out).items()}
