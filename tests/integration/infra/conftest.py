"""Fixtures for the infrastructure tests: the docker CLI and throwaway containers."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
TEST_LABEL = "berth.test=1"


def run_docker(*args: str, timeout: float = 60) -> str:
    """Run the docker CLI; raise with its stderr on failure; return stdout."""
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def image_labels(image: str) -> dict[str, str]:
    labels = json.loads(
        run_docker("image", "inspect", "--format", "{{json .Config.Labels}}", image)
    )
    assert isinstance(labels, dict)
    return labels


def get_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session", autouse=True)
def docker_answers() -> None:
    proc = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"dockerd does not answer (run scripts/setup.sh): {proc.stderr.strip()}")


@pytest.fixture
def container_name() -> Iterator[str]:
    """A unique container name; the container of that name is force-removed afterwards."""
    name = f"berth-test-infra-{uuid.uuid4().hex[:12]}"
    yield name
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)


class DockerCLI:
    """The helpers above as one fixture (test modules cannot import conftest)."""

    run = staticmethod(run_docker)
    labels = staticmethod(image_labels)
    free_port = staticmethod(get_free_port)
    test_label = TEST_LABEL
    repo_root = REPO_ROOT


@pytest.fixture(scope="session")
def dk() -> DockerCLI:
    return DockerCLI()
