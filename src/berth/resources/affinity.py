"""NUMA affinity: the order in which devices should be tried. Pure.

The result is a list of device *groups*; the alloc map's strategy orders devices inside a
group, never across groups, so affinity always wins over load spreading.

* With a hint (the NUMA nodes of the devices a kernel already got from earlier device kinds in
  the allocation order): devices on those nodes first, the rest after. Devices without a known
  node count as near (they are equally far from everything).
* Without a hint, `INTERLEAVED` (default) gives one group alternating across nodes, so a
  kernel's devices spread over the memory controllers; `PREFER_SINGLE_NODE` gives one group per
  node, the node with the most free capacity first, so a kernel fits inside one node if it can.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from decimal import Decimal
from enum import StrEnum
from itertools import chain, zip_longest

from berth.types import DeviceId


class AffinityPolicy(StrEnum):
    INTERLEAVED = "interleaved"
    PREFER_SINGLE_NODE = "prefer-single-node"


def device_groups(numa: Mapping[DeviceId, int | None], policy: AffinityPolicy,
                  hint_nodes: Collection[int], free: Mapping[DeviceId, Decimal]
                  ) -> list[list[DeviceId]]:
    """Preference-ordered groups over every device in `numa` (dict order is the natural one)."""
    if hint_nodes:
        near = [d for d, n in numa.items() if n is None or n in hint_nodes]
        far = [d for d in numa if d not in set(near)]
        return [g for g in (near, far) if g]
    by_node = _by_node(numa)
    if policy is AffinityPolicy.INTERLEAVED:
        interleaved = chain.from_iterable(zip_longest(*by_node.values()))
        return [[d for d in interleaved if d is not None]] if numa else []
    ranked = sorted(by_node.items(), key=lambda kv: (
        -sum((free.get(d, Decimal(0)) for d in kv[1]), Decimal(0)), _node_sort_key(kv[0])))
    return [devices for _, devices in ranked]


def nodes_of(numa: Mapping[DeviceId, int | None], devices: Collection[DeviceId]) -> set[int]:
    return {n for d in devices if (n := numa.get(d)) is not None}


def _by_node(numa: Mapping[DeviceId, int | None]) -> dict[int | None, list[DeviceId]]:
    groups: dict[int | None, list[DeviceId]] = {}
    for device_id, node in numa.items():
        groups.setdefault(node, []).append(device_id)
    return dict(sorted(groups.items(), key=lambda kv: _node_sort_key(kv[0])))


def _node_sort_key(node: int | None) -> int:
    return node if node is not None else 1 << 30
