"""Compute plugins: the loader and the built-in cpu/mem/cuda/rocm/tpu/mock.

The role every plugin implements (``ComputePlugin``) and its value types live in
:mod:`berth.resources`, which allocates what plugins offer.
"""

from berth.plugins.loader import ENTRY_POINT_GROUP, check_plugin, load_plugins

__all__ = [
    "ENTRY_POINT_GROUP",
    "check_plugin",
    "load_plugins",
]
