"""Pure parts of the runner package: framing, labels, service definitions, result shapes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from berth.errors import InvalidArgument
from berth.kernel.spec import ServicePortDecl, parse_service_ports
from berth.runner import next_result
from berth.runner.kernel_side import protocol, servicedefs

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(st.lists(st.dictionaries(st.text(), json_values, max_size=5), max_size=5),
       st.integers(min_value=1, max_value=7))
def test_frames_round_trip_in_any_chunking(messages: list[dict], chunk: int) -> None:
    stream = b"".join(protocol.encode_frame(m) for m in messages)
    decoder = protocol.FrameDecoder()
    out = []
    for i in range(0, len(stream), chunk):
        out += decoder.feed(stream[i:i + chunk])
    assert out == messages and decoder.pending == 0


def test_oversized_and_garbage_frames_are_refused() -> None:
    with pytest.raises(protocol.FrameError):
        protocol.FrameDecoder(max_frame=10).feed(struct.pack(">I", 11) + b"x" * 11)
    with pytest.raises(protocol.FrameError):
        protocol.FrameDecoder().feed(struct.pack(">I", 3) + b"[1]")
    with pytest.raises(protocol.FrameError):
        protocol.FrameDecoder().feed(struct.pack(">I", 2) + b"\xff\xfe")


def test_service_ports_label() -> None:
    ports = parse_service_ports("jupyter:http:8080, tb:http:[6006,6007],term:pty:8090,x:preopen:9000")
    assert ports == [ServicePortDecl(name="jupyter", protocol="http", container_ports=(8080,)),
                     ServicePortDecl(name="tb", protocol="http", container_ports=(6006, 6007)),
                     ServicePortDecl(name="x", protocol="preopen", container_ports=(9000,))]
    assert parse_service_ports("") == [] and parse_service_ports(None) == []


def test_intrinsic_services_at_their_own_ports() -> None:
    # An image that serves sshd and ttyd itself declares them where Backend.AI puts them.
    assert [(d.name, d.container_ports) for d in
            parse_service_ports("sshd:tcp:2200,ttyd:http:7681")] == [
        ("sshd", (2200,)), ("ttyd", (7681,))]


@pytest.mark.parametrize("label", ["a:http", "a:ftp:8080", "a:http:80", "a:http:2000", "a:http:7681",
                                   "sshd:http:2200", "ttyd:tcp:7681", "sshd:tcp:7681",
                                   "ttyd:http:[7681,7682]", "a:http:70000",
                                   "a:http:x", "a:http:8080,a:tcp:8081", "a:http:8080,b:tcp:8080",
                                   "a:http:[]", ":http:8080"])
def test_bad_service_ports_labels(label: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_service_ports(label)
    assert info.value.field == "ai.backend.service-ports"


def test_interpolation_forms() -> None:
    variables = {"runtime_path": "/usr/bin/python3", "ports": [8080, 8081], "cfg": "/tmp/c"}
    value = ["{runtime_path}", "--port={ports[1]}", "${{ cfg }}", "{{literal}}", {"k": "{ports[0]}"}]
    assert servicedefs.interpolate(value, variables) == [
        "/usr/bin/python3", "--port=8081", "/tmp/c", "{literal}", {"k": "8080"}]
    for bad in ("{nope}", "{ports[5]}"):
        with pytest.raises(servicedefs.ServiceDefinitionError):
            servicedefs.interpolate(bad, variables)


def test_definition_arguments_and_envs() -> None:
    defn = servicedefs.parse_definition("jl", {
        "command": ["{runtime_path}", "-m", "jupyterlab", "--port", "{ports[0]}"],
        "allowed_arguments": ["--ServerApp.token", "--debug"], "allowed_envs": ["TZ"],
        "default_arguments": {"--ServerApp.token": ""}, "env": {"A": "{ports[0]}"}})
    variables = {"runtime_path": "py", "ports": [9000]}
    argv = servicedefs.build_argv(defn, variables, {"arguments": {"--debug": None}}, "/bin/sh")
    assert argv == ["py", "-m", "jupyterlab", "--port", "9000", "--ServerApp.token", "", "--debug"]
    assert servicedefs.build_env(defn, variables, {"envs": {"TZ": "UTC"}}) == {"A": "9000", "TZ": "UTC"}
    with pytest.raises(servicedefs.ServiceDefinitionError):
        servicedefs.build_argv(defn, variables, {"arguments": {"--evil": "1"}}, "/bin/sh")
    with pytest.raises(servicedefs.ServiceDefinitionError):
        servicedefs.build_env(defn, variables, {"envs": {"LD_PRELOAD": "x"}})


def test_shell_command_definition_and_invalid_ones() -> None:
    defn = servicedefs.parse_definition("s", {"command": "serve --port {ports[0]}"})
    assert servicedefs.build_argv(defn, {"ports": [5]}, {}, "/bin/bash") == [
        "/bin/bash", "-c", "serve --port 5"]
    for raw in ({"command": []}, {"command": 3}, [], {"command": ["x"], "prestart": [{"action": "rm"}]}):
        with pytest.raises(servicedefs.ServiceDefinitionError):
            servicedefs.parse_definition("bad", raw)


def test_next_result_shapes() -> None:
    reply = {"runId": "r", "status": "finished", "exitCode": 0, "options": None, "records": [
        ["stdout", "a"], ["stdout", "b"], ["stderr", "e"], ["media", ["image/png", "AAA"]],
        ["html", "<i/>"], ["stdout", "c"]]}
    v2 = next_result(reply, 2)
    assert v2 == {"runId": "r", "status": "finished", "exitCode": 0, "options": None, "files": [],
                  "console": [("stdout", "ab"), ("stderr", "e"), ("media", ("image/png", "AAA")),
                              ("html", "<i/>"), ("stdout", "c")]}
    v1 = next_result(reply, 1)
    assert (v1["stdout"], v1["stderr"], v1["media"], v1["html"]) == (
        "abc", "e", [("image/png", "AAA")], ["<i/>"])
