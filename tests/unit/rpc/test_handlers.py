from __future__ import annotations

import uuid
from typing import Any

import pytest

from berth.errors import InvalidArgument, KernelNotFound, MethodNotFound
from berth.rpc import METHOD_NAMES, HandlerRegistry, failure
from berth.rpc.fake import FakeAgent


class Facade:
    async def check_running(self, kernel_id: uuid.UUID, agent_id: str | None = None) -> str:
        return f"{type(kernel_id).__name__}:{kernel_id}"

    async def release_port(self, port_no: int) -> int:  # no agent_id: dropped, not an error
        return port_no + 1

    async def health(self, agent_id: str | None = None) -> dict[str, Any]:
        return {"status": "ok"}

    async def gather_hwinfo(self) -> dict[str, Any]:
        return {"cpu": {"status": "healthy"},
                "gpu": {"status": "healthy", "metadata": {"count": 2, "model": "X"}}}

    def get_status(self) -> None:  # not a coroutine: not served
        return None


async def test_arguments_are_coerced_to_annotations() -> None:
    kid = uuid.uuid4()
    call = HandlerRegistry(Facade()).prepare("check_running", [str(kid)], {"agent_id": None})
    assert call.kernel_id == str(kid)
    assert await call.run() == f"UUID:{kid}"


async def test_agent_id_is_dropped_for_methods_without_it() -> None:
    call = HandlerRegistry(Facade()).prepare("release_port", ["41"], {"agent_id": "a1"})
    assert await call.run() == 42


@pytest.mark.parametrize(("args", "kwargs"), [
    (["not-a-uuid"], {}), ([], {}), (["a", "b", "c"], {}), ([str(uuid.uuid4())], {"bogus": 1}),
])
def test_bad_arguments_raise_invalid_argument(args: list[Any], kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        HandlerRegistry(Facade()).prepare("check_running", args, kwargs)


def test_unknown_and_unimplemented_methods() -> None:
    reg = HandlerRegistry(Facade())
    for name in ("no_such_method", "get_status", "create_kernels", "__init__"):
        with pytest.raises(MethodNotFound):
            reg.prepare(name, [], {})
    assert "get_status" not in reg.names and "health_v2" in reg.names


async def test_v3_envelope_falls_back_to_v1_methods() -> None:
    reg = HandlerRegistry(Facade())
    assert await reg.prepare("health_v2", [], {"req": {}, "agent_id": None}).run() == {
        "status": "ok"}
    hw = await reg.prepare("gather_hwinfo_v2", [], {"req": {}, "agent_id": "x"}).run()
    assert hw == {"devices": [
        {"device_name": "cpu", "status": "healthy", "metadata": {}},
        {"device_name": "gpu", "status": "healthy", "metadata": {"count": "2", "model": "X"}}]}
    with pytest.raises(InvalidArgument, match="req"):
        reg.prepare("health_v2", [], {"agent_id": None})


def test_method_table_covers_backendai_and_seed_names() -> None:
    for name in ("create_kernels", "destroy_kernel", "restart_kernel", "execute",
                 "get_completions", "sync_kernel_registry", "create_kernel", "execute_code",
                 "get_status", "health_v2", "gather_hwinfo_v2"):
        assert name in METHOD_NAMES
    assert len(set(METHOD_NAMES)) == len(METHOD_NAMES)


def test_fake_agent_serves_its_methods() -> None:
    names = HandlerRegistry(FakeAgent()).names
    assert {"ping", "get_status", "create_kernels", "destroy_kernel"} <= names


def test_failure_triple_rebuilds_the_typed_error_with_its_data() -> None:
    try:
        raise KernelNotFound(kernel_id="k1")
    except KernelNotFound as exc:
        name, rep, tb = failure.describe(exc)
    assert name == "KernelNotFound" and rep.startswith("KernelNotFound(")
    again = failure.rebuild(name, rep, tb)
    assert isinstance(again, KernelNotFound) and again.kernel_id == "k1"
    other = failure.rebuild("ValueError", "ValueError('x')", "tb")
    assert type(other).__name__ == "RemoteError" and other.data["name"] == "ValueError"


async def test_plain_calls_bind_by_name_and_still_validate() -> None:
    class Plain:
        async def commit(self, kernel_id: str, email: str, *, canonical: str | None = None,
                         agent_id: str | None = None) -> tuple[str, str, str | None]:
            return kernel_id, email, canonical

    reg = HandlerRegistry(Plain())
    call = reg.prepare("commit", ["k1"], {"email": "a@b", "canonical": None, "agent_id": "x"})
    assert call.kwargs == {"kernel_id": "k1", "email": "a@b", "canonical": None,
                           "agent_id": "x"} and call.kernel_id == "k1"
    assert await call.run() == ("k1", "a@b", None)
    with pytest.raises(InvalidArgument) as err:  # not a str: pydantic decides and refuses
        reg.prepare("commit", ["k1", "a@b"], {"canonical": 5})
    assert err.value.field == "canonical"  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument):  # keyword-only given by position
        reg.prepare("commit", ["k1", "a@b", "c"], {})
