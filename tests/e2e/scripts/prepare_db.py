"""The manager's database before its server's first start, in one Python process (each
``backend.ai`` command alone pays the manager's imports again): ``mgr schema oneshot``,
``mgr fixture populate FIXTURE``, ``mgr image rescan local``.

Runs inside berth/bai-compat. Usage: prepare_db.py MANAGER_TOML FIXTURE_JSON
"""

from __future__ import annotations

import sys

from ai.backend.cli.__main__ import main


def run(*args: str) -> None:
    main.main(args=list(args), prog_name="backend.ai", standalone_mode=False)


if __name__ == "__main__":
    config, fixture = sys.argv[1], sys.argv[2]
    run("mgr", "-f", config, "schema", "oneshot")
    run("mgr", "-f", config, "fixture", "populate", fixture)
    run("mgr", "-f", config, "image", "rescan", "local")
