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
from collections.abc import Collection, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from berth.config import parse_binary_size
from berth.errors import BelowImageMinimum

__all__ = ["MIN_LABEL_PREFIX", "check_image_minimums", "image_minimums"]

log = logging.getLogger(__name__)

MIN_LABEL_PREFIX = "ai.backend.resource.min."


def _quantity(slot: str, raw: str) -> Decimal:
    """``mem`` (and any ``*.mem`` slot) takes binary sizes; others are plain decimals."""
    if slot == "mem" or slot.endswith(".mem"):
        return Decimal(parse_binary_size(raw))
    return Decimal(raw.strip())


def image_minimums(labels: Mapping[str, str]) -> dict[str, Decimal]:
    """``{slot: minimum}`` from the labels; an unreadable value is logged and ignored (the
    image is at fault, not the request)."""
    out: dict[str, Decimal] = {}
    for key, raw in labels.items():
        if not key.startswith(MIN_LABEL_PREFIX):
            continue
        slot = key[len(MIN_LABEL_PREFIX):]
        try:
            value = _quantity(slot, str(raw))
        except (ValueError, InvalidOperation):
            log.warning("image label %s=%r is not a quantity; ignored", key, raw)
            continue
        if value.is_finite() and value > 0:
            out[slot] = value
    return out


def check_image_minimums(labels: Mapping[str, str], requested: Mapping[str, Decimal],
                         opts: Mapping[str, Any], *, image: str,
                         known_slots: Collection[str] | None = None) -> None:
    """Raise :class:`BelowImageMinimum` for the first slot asked below the image's minimum."""
    minimums = image_minimums(labels)
    shmem = opts.get("shmem")
    if shmem is not None and "mem" in minimums:
        minimums["mem"] += Decimal(parse_binary_size(shmem))
    for slot, minimum in sorted(minimums.items()):
        if known_slots is not None and slot not in known_slots and slot not in requested:
            continue  # the node has no such slot: the manager skips unknown slots too
        asked = Decimal(requested.get(slot, 0))
        if asked < minimum:
            raise BelowImageMinimum(slot, asked, minimum, image=image)
