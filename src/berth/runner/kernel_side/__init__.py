"""The runner's kernel side: the files mounted read-only into every kernel (at
`berth.storage.RUNNER`, /opt/berth/runner) and run there on the image's own Python.

Standard library only, Python >= 3.8 (`ruff.toml` here holds them to it). The modules import
each other relatively, one way only, so the package works under any name: `runner` inside a
kernel, `berth.runner.kernel_side` in the agent. `krunner.py` is the only script; its first
lines are the only path setup. The agent imports nothing from here but `protocol`.

Why one codec, imported by the agent as `berth.runner.kernel_side.protocol`, rather than an
agent-side copy checked byte for byte by a test: the frame format, the op names, the run
statuses and the ready FIFO's name are one contract; a copy would be a second generation
kept in step by a test, where the import keeps it in step by construction. Importing it costs
the agent nothing, since `protocol.py` is stdlib only and this `__init__` imports nothing.
"""
