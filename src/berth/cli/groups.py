"""The ``kernel`` and ``agent`` groups with their subcommands from the modules that hold them.

Imported only when one of the two is run (``main.LazyGroup``).
"""

from __future__ import annotations

from berth.cli.agent import agent
from berth.cli.kernel import kernel
from berth.cli.kernel_files import COMMANDS as KERNEL_FILES_COMMANDS
from berth.cli.kernel_run import COMMANDS as KERNEL_RUN_COMMANDS
from berth.cli.kernel_services import COMMANDS as KERNEL_SERVICE_COMMANDS
from berth.cli.top import agent_top, kernel_top

for _command in (*KERNEL_RUN_COMMANDS, *KERNEL_FILES_COMMANDS, *KERNEL_SERVICE_COMMANDS,
                 kernel_top):
    kernel.add_command(_command)
agent.add_command(agent_top)

__all__ = ["agent", "kernel"]
