from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import berth.cli.image as image_cli
from berth.backend.base import ImageInfo

from .test_images import FakeBackend, layer_events


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    be = FakeBackend()
    monkeypatch.setattr(image_cli, "open_backend", lambda: be)
    return be


def test_pull_succeeds_and_reports(backend: FakeBackend) -> None:
    backend.remote["reg/x:1"] = ("sha256:x", layer_events(1000, 5))
    res = CliRunner().invoke(image_cli.image_group, ["pull", "-q", "reg/x:1"])
    assert res.exit_code == 0, res.output
    assert "pulled reg/x:1" in res.output and "reg/x:1" in backend.images
    assert backend.pulls == [("reg/x:1", None)]


def test_pull_passes_credentials(backend: FakeBackend) -> None:
    backend.remote["reg/x:1"] = ("sha256:x", layer_events(10, 1))
    res = CliRunner().invoke(image_cli.image_group, ["pull", "-q", "--username", "u",
                                                     "--password", "p", "reg/x:1"])
    assert res.exit_code == 0, res.output
    assert backend.pulls[0][1] == {"username": "u", "password": "p", "serveraddress": "reg"}


def test_pull_of_missing_tag_fails_with_reason(backend: FakeBackend) -> None:
    res = CliRunner().invoke(image_cli.image_group, ["pull", "-q", "reg/none:1"])
    assert res.exit_code == 1 and "not found" in res.output


def test_present_image_with_tag_policy_is_up_to_date(backend: FakeBackend) -> None:
    backend.images["reg/x:1"] = ImageInfo("sha256:x", ("reg/x:1",), {})
    res = CliRunner().invoke(image_cli.image_group, ["pull", "-q", "reg/x:1"])
    assert res.exit_code == 0 and "up to date" in res.output and backend.pulls == []


def test_ls_json(backend: FakeBackend) -> None:
    backend.images["k:1"] = ImageInfo("sha256:1", ("k:1",), {"ai.backend.kernelspec": "1"})
    backend.images["o:1"] = ImageInfo("sha256:2", ("o:1",), {})
    res = CliRunner().invoke(image_cli.image_group, ["ls", "--json"])
    assert json.loads(res.output) == [{"canonical": "k:1", "digest": "sha256:1",
                                       "architecture": ""}]
    res = CliRunner().invoke(image_cli.image_group, ["ls", "-a"])
    assert "o:1" in res.output
