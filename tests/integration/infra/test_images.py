"""The local kernel images exist, carry Backend.AI labels and really serve their services."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

PYTHON = "berth/python:3.11"
BUSYBOX = "berth/busybox:latest"

EXPECTED_LABELS = {
    PYTHON: {
        "ai.backend.kernelspec": "1",
        "ai.backend.features": "batch query uid-match user-input",
        "ai.backend.runtime-type": "python",
        "ai.backend.runtime-path": "/usr/bin/python3",
        "ai.backend.base-distro": "debian12",
        "ai.backend.service-ports": "http-server:http:8080",
        "ai.backend.resource.min.cpu": "1",
        "ai.backend.resource.min.mem": "64m",
    },
    BUSYBOX: {
        "ai.backend.kernelspec": "1",
        "ai.backend.features": "batch uid-match",
        "ai.backend.runtime-type": "app",
        "ai.backend.runtime-path": "/bin/true",
        "ai.backend.service-ports": "http-server:http:8080",
    },
}
IMAGES = sorted(EXPECTED_LABELS)
# No proxy: every request here goes to 127.0.0.1 only.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def run(dk: Any, image: str, *cmd: str) -> str:
    out: str = dk.run("run", "--rm", "--init", "--label", dk.test_label, image, *cmd)
    return out


def service_ports(label: str) -> list[tuple[str, str, int]]:
    """Parse ai.backend.service-ports: "name:protocol:port,..."."""
    result = []
    for item in label.split(","):
        name, proto, port = item.split(":")
        result.append((name, proto, int(port)))
    return result


def service_def(dk: Any, image: str, name: str) -> dict[str, Any]:
    parsed = json.loads(run(dk, image, "cat", f"/etc/backend.ai/service-defs/{name}.json"))
    assert isinstance(parsed, dict)
    return parsed


@pytest.mark.parametrize("image", IMAGES)
def test_image_carries_labels(dk: Any, image: str) -> None:
    labels = dk.labels(image)
    expected = EXPECTED_LABELS[image]
    assert {k: labels.get(k) for k in expected} == expected
    assert len(labels.get("berth.recipe-hash", "")) == 16


def test_python_image_runs_python311(dk: Any) -> None:
    out = run(dk, PYTHON, "python3", "-c", "import sys; print(sys.version_info[:2])")
    assert out.strip() == "(3, 11)"


@pytest.mark.parametrize("image", IMAGES)
def test_runtime_path_is_executable(dk: Any, image: str) -> None:
    run(dk, image, "test", "-x", dk.labels(image)["ai.backend.runtime-path"])


def test_busybox_image_has_shell_and_httpd(dk: Any) -> None:
    out = run(dk, BUSYBOX, "sh", "-c", "which sh httpd && httpd --help 2>&1 | head -1 | cut -c1-7")
    assert out.split() == ["/bin/sh", "/usr/sbin/httpd", "BusyBox"]


@pytest.mark.parametrize("image", IMAGES)
def test_work_user_home_and_tmp(dk: Any, image: str) -> None:
    out = run(dk, image, "sh", "-c", "id -u work; id -g work; stat -c '%u %a' /home/work /tmp")
    assert out.split("\n")[:4] == ["1000", "1000", "1000 755", "0 1777"]


@pytest.mark.parametrize("image", IMAGES)
def test_every_declared_service_has_a_valid_definition(dk: Any, image: str) -> None:
    for name, proto, _port in service_ports(dk.labels(image)["ai.backend.service-ports"]):
        definition = service_def(dk, image, name)
        command = definition["command"]
        assert isinstance(command, list) and all(isinstance(a, str) for a in command)
        assert any("{ports[0]}" in arg for arg in command)
        assert str(definition["url_template"]).startswith(f"{proto}://")


def wait_for_http(url: str, timeout: float = 20.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with NO_PROXY.open(url, timeout=2) as resp:
                body: bytes = resp.read()
                return body
        except (urllib.error.URLError, ConnectionError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer within {timeout}s: {exc}") from exc
            time.sleep(0.1)


@pytest.mark.parametrize("image", IMAGES)
def test_declared_http_service_is_really_served(dk: Any, image: str, container_name: str) -> None:
    name, _proto, port = service_ports(dk.labels(image)["ai.backend.service-ports"])[0]
    definition = service_def(dk, image, name)
    argv = [arg.format(ports=[port]) for arg in definition["command"]]
    host_port = dk.free_port()
    dk.run(
        "run",
        "-d",
        "--init",
        "--label",
        dk.test_label,
        "--name",
        container_name,
        "--user",
        "1000:1000",
        "-p",
        f"127.0.0.1:{host_port}:{port}",
        image,
        *argv,
    )
    dk.run("exec", container_name, "sh", "-c", "echo berth-probe > /home/work/probe.txt")
    url = str(definition["url_template"]).format(host="127.0.0.1", port=host_port)
    assert wait_for_http(url + "probe.txt") == b"berth-probe\n"
