"""The one merge rule of container-create fragments (berth.resources.docker_args)."""

from __future__ import annotations

from typing import Any

import pytest

from berth.errors import PluginError
from berth.resources import Override, merge_docker_args


def test_dicts_merge_recursively_at_every_depth() -> None:
    base = {"HostConfig": {"LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}}}}
    extra = {"HostConfig": {"LogConfig": {"Config": {"max-file": "2"}}, "Memory": 1},
             "Env": {"A": "1"}}
    assert merge_docker_args(base, extra) == {
        "HostConfig": {"LogConfig": {"Type": "json-file",
                                     "Config": {"max-size": "10m", "max-file": "2"}},
                       "Memory": 1},
        "Env": {"A": "1"}}


def test_lists_concatenate_where_the_container_config_used_to_replace_them() -> None:
    # A plugin's GroupAdd (rocm: "video") used to replace the spec's supplementary groups.
    builder = {"GroupAdd": ["1001"], "Devices": [{"PathOnHost": "/dev/kfd"}]}
    plugin = {"GroupAdd": ["video"], "Devices": [{"PathOnHost": "/dev/dri/renderD128"}]}
    assert merge_docker_args(builder, plugin) == {
        "GroupAdd": ["1001", "video"],
        "Devices": [{"PathOnHost": "/dev/kfd"}, {"PathOnHost": "/dev/dri/renderD128"}]}


def test_an_item_already_in_a_list_is_not_added_twice() -> None:
    assert merge_docker_args({"GroupAdd": ["video"]}, {"GroupAdd": ["video", "render"]},
                             {"GroupAdd": ["render"]}) == {"GroupAdd": ["video", "render"]}


def test_an_equal_scalar_may_be_repeated() -> None:
    assert merge_docker_args({"CpuPeriod": 100000}, {"CpuPeriod": 100000}) == {
        "CpuPeriod": 100000}


@pytest.mark.parametrize(("earlier", "later", "key"), [
    # the plugins' merge let the later value win, silently
    ({"HostConfig": {"Memory": 1}}, {"HostConfig": {"Memory": 2}}, "HostConfig.Memory"),
    ({"HostConfig": {"ShmSize": 1}}, {"HostConfig": {"ShmSize": None}}, "HostConfig.ShmSize"),
    ({"HostConfig": {"Ulimits": []}}, {"HostConfig": {"Ulimits": {}}}, "HostConfig.Ulimits"),
    ({"Env": {"A": "1"}}, {"Env": {"A": "2"}}, "Env.A"),
])
def test_a_different_value_without_override_is_refused_with_its_path(
        earlier: dict[str, Any], later: dict[str, Any], key: str) -> None:
    with pytest.raises(PluginError) as caught:
        merge_docker_args(earlier, later)
    assert caught.value.data["key"] == key


def test_an_override_replaces_whatever_was_there() -> None:
    got = merge_docker_args(
        {"HostConfig": {"Memory": 1, "GroupAdd": ["a"], "LogConfig": {"Type": "json-file"}}},
        {"HostConfig": {"Memory": Override(2), "GroupAdd": Override(["b"]),
                        "LogConfig": Override({"Type": "none"})}})
    assert got == {"HostConfig": {"Memory": 2, "GroupAdd": ["b"], "LogConfig": {"Type": "none"}}}


def test_an_override_where_nothing_was_is_a_plain_value() -> None:
    assert merge_docker_args({}, {"HostConfig": {"Init": Override(True)}}) == {
        "HostConfig": {"Init": True}}


def test_the_fragments_are_left_unchanged() -> None:
    first = {"HostConfig": {"GroupAdd": ["a"], "LogConfig": {"Type": "json-file"}}}
    second = {"HostConfig": {"GroupAdd": ["b"], "LogConfig": {"Config": {}}}}
    merged = merge_docker_args(first, second)
    merged["HostConfig"]["GroupAdd"].append("c")
    merged["HostConfig"]["LogConfig"]["Config"]["x"] = "y"
    assert first == {"HostConfig": {"GroupAdd": ["a"], "LogConfig": {"Type": "json-file"}}}
    assert second == {"HostConfig": {"GroupAdd": ["b"], "LogConfig": {"Config": {}}}}


def test_no_fragment_gives_an_empty_body() -> None:
    assert merge_docker_args() == {}
