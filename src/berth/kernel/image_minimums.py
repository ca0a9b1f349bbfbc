"""An image's minimum resources (``ai.backend.resource.min.{slot}`` labels), checked at create.

Backend.AI's manager (``ResourceLimitRule._validate_kernel``) refuses a kernel whose request is
below the image's minimum: the ``mem`` minimum is raised by the kernel's ``shmem``, a minimum
of 0 is no minimum, a slot the installation does not know is skipped, and a slot not requested
counts as 0. Berth checks the same at create, against the slots this node knows, so a request
that reaches the agent directly (or from a manager that skipped the check) is refused with
:class:`~berth.errors.BelowImageMinimum` naming the slot, the amount asked and the minimum.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from berth.errors import BelowImageMinimum, InvalidArgument
from berth.resources import INTRINSIC_SLOT_TYPES, parse_amount, parse_binary_size
from berth.types import SlotName, SlotType

__all__ = ["MIN_LABEL_PREFIX", "check_image_minimums", "image_minimums"]

log = logging.getLogger(__name__)

MIN_LABEL_PREFIX = "ai.backend.resource.min."


def image_minimums(labels: Mapping[str, str],
                   slot_types: Mapping[SlotName, SlotType] = INTRINSIC_SLOT_TYPES,
                   ) -> dict[SlotName, Decimal]:
    """``{slot: minimum}`` from the labels, each read by its slot's type (``mem`` and any other
    bytes slot take binary sizes); a slot `slot_types` lacks must be a plain number. An
    unreadable value is logged and ignored (the image is at fault, not the request)."""
    out: dict[SlotName, Decimal] = {}
    for key, raw in labels.items():
        if not key.startswith(MIN_LABEL_PREFIX):
            continue
        slot = SlotName(key[len(MIN_LABEL_PREFIX):])
        try:
            value = parse_amount(slot, str(raw).strip(), slot_types.get(slot, SlotType.COUNT))
        except InvalidArgument:
            log.warning("image label %s=%r is not a quantity; ignored", key, raw)
            continue
        if value > 0:
            out[slot] = value
    return out


def check_image_minimums(labels: Mapping[str, str], requested: Mapping[SlotName, Decimal],
                         opts: Mapping[str, Any], *, image: str,
                         slot_types: Mapping[SlotName, SlotType] | None = None) -> None:
    """Raise :class:`BelowImageMinimum` for the first slot asked below the image's minimum;
    `slot_types` are the node's (None: every labelled slot counts, read as cpu/mem/numbers)."""
    minimums = image_minimums(labels, INTRINSIC_SLOT_TYPES if slot_types is None else slot_types)
    shmem = opts.get("shmem")
    mem = SlotName("mem")
    if shmem is not None and mem in minimums:
        minimums[mem] += parse_binary_size(shmem)
    for slot, minimum in sorted(minimums.items()):
        if slot_types is not None and slot not in slot_types and slot not in requested:
            continue  # the node has no such slot: the manager skips unknown slots too
        asked = Decimal(requested.get(slot, 0))
        if asked < minimum:
            raise BelowImageMinimum(slot, asked, minimum, image=image)
