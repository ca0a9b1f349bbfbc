"""The Docker CLI for tests: presence checks, one command, and a test agent's containers."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from .procs import binary

OWNER = "ai.backend.owner"
KERNEL_ID = "ai.backend.kernel-id"


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    """``docker ARGS``'s stripped stdout; a failure raises :class:`RuntimeError` with stderr."""
    res = subprocess.run([binary("docker", "docker.io"), *args], check=False,
                         capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout.strip()


def _succeeds(*args: str) -> bool:
    return subprocess.run([binary("docker", "docker.io"), *args], check=False,
                          capture_output=True).returncode == 0


def image_exists(ref: str) -> bool:
    return _succeeds("image", "inspect", ref)


def require_docker_and_images(*images: str) -> None:
    """Fail (never skip) when dockerd does not answer or one of ``images`` is missing."""
    if not _succeeds("info"):
        pytest.fail("the Docker engine does not answer: run scripts/setup.sh first")
    for image in images:
        if not image_exists(image):
            pytest.fail(f"image {image} is missing: run scripts/setup.sh first")


def containers(agent_id: str, kernel_id: str | None = None) -> list[str]:
    """Ids of the containers (any state) of agent ``agent_id``, or of one of its kernels."""
    filters = ["--filter", f"label={OWNER}={agent_id}"]
    if kernel_id is not None:
        filters += ["--filter", f"label={KERNEL_ID}={kernel_id}"]
    return docker("ps", "-aq", *filters, check=False).split()


def remove_containers(agent_id: str) -> list[str]:
    """Force-remove agent ``agent_id``'s containers; the ids that were still there."""
    ids = containers(agent_id)
    if ids:
        docker("rm", "-f", *ids, check=False)
    return ids


def remove_run_containers(run_label: str) -> list[str]:
    """Force-remove every container whose owner (agent id) contains ``run_label``."""
    out = docker("ps", "-a", "--filter", f"label={OWNER}",
                 "--format", f'{{{{.ID}}}} {{{{.Label "{OWNER}"}}}}', check=False)
    ids = [cid for cid, _, owner in (line.partition(" ") for line in out.splitlines())
           if run_label in owner]
    if ids:
        docker("rm", "-f", *ids, check=False)
    return ids


def docker_session(run_label: str, *images: str) -> Iterator[None]:
    """Body of a session fixture: require dockerd and ``images``; afterwards remove and
    report (fail) any container an agent of this run (id containing ``run_label``) left."""
    require_docker_and_images(*images)
    yield
    left = remove_run_containers(run_label)
    if left:
        pytest.fail(f"tests left {len(left)} kernel container(s) behind")
