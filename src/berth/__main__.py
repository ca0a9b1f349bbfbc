"""``python -m berth``: the ``berth`` command (what the watcher runs the agent with)."""

from berth.cli import main

if __name__ == "__main__":
    main()
