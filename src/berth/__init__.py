"""Berth: a compute-node agent running computing sessions ("kernels") as Docker containers."""

__version__ = "0.1.0"
