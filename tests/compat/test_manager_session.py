"""A session's whole life as the 26.9.6 manager drives it (scripts/manager_session.py): every
RPC the manager calls on an agent during a session, with arguments built from the manager's own
types, replies consumed the way its callers consume them, and every event Berth emits on the
way decoded with the manager's queue payloads and event classes.

One script run (one container, one set of kernels) feeds every test of this module; each test
checks one call or event, so a failure names what the manager would reject.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from support.docker import docker
from support.procs import RegistryServer

from .conftest import CompatNode, run_script

LOCAL_IMAGE = "berth/python:3.11"
PURGE_SOURCE = "berth/busybox:latest"

# The module fixture runs the whole flow inside the first test's setup.
pytestmark = pytest.mark.timeout(480)


def _inspect(ref: str) -> dict[str, Any]:
    return json.loads(docker("image", "inspect", ref))[0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def flow(compat_node: CompatNode, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[dict[str, Any]]:
    """Run the flow once: a registry of its own (commit is pushed there), the local image
    tagged under that registry as an already present non-local image, a throwaway tag to
    purge; every tag and the committed image are removed afterwards."""
    info = _inspect(LOCAL_IMAGE)
    tag = uuid.uuid4().hex[:8]
    with RegistryServer(tmp_path_factory.mktemp("compat-registry")) as registry:
        remote = f"{registry.host}/{LOCAL_IMAGE}"
        purge = f"berth/compat-purge:{tag}"
        commit = f"{registry.host}/berth/compat-commit:{tag}"
        pull = f"{registry.host}/berth/python:3.11-pull{tag}"  # platform tag: letters first
        session_id = str(uuid.uuid4())
        network = f"bai-singlenode-{session_id}"
        try:
            docker("tag", LOCAL_IMAGE, remote)
            docker("tag", PURGE_SOURCE, purge)
            docker("tag", LOCAL_IMAGE, pull)  # in the registry only: the agent must pull it
            docker("push", pull)
            docker("rmi", pull)
            env = {**compat_node.script_env(),
                   "BERTH_LOCAL_IMAGE": LOCAL_IMAGE, "BERTH_IMAGE_ID": info["Id"],
                   "BERTH_IMAGE_LABELS": json.dumps(info["Config"]["Labels"] or {}),
                   "BERTH_REGISTRY": registry.host, "BERTH_COMMIT_TAG": tag,
                   "BERTH_PURGE_IMAGE": purge, "BERTH_PULL_IMAGE": pull,
                   "BERTH_SESSION_ID": session_id}
            try:
                result = run_script("manager_session.py", env=env, keys=compat_node.keys,
                                    timeout=420)
            except pytest.fail.Exception as exc:
                pytest.fail(f"{exc}\n--- agent log ---\n{compat_node.agent.log()[-3000:]}")
            result["registry"] = registry.host
            result["images_after_purge"] = purge
            result["commit_files"] = sorted(
                p.name for p in compat_node.agent.root.rglob("*.tar.gz"))
            result["catalog"] = docker_registry_tags(registry.host, "berth/compat-commit")
            result["images_after"] = {ref: image_present(ref) for ref in (purge, commit, pull)}
            result["networks_after"] = docker("network", "ls", "--filter", f"name={network}",
                                              "--format", "{{.Name}}", check=False)
            yield result
        finally:
            docker("rmi", "-f", remote, purge, commit, pull, check=False)
            docker("network", "rm", network, check=False)  # when the flow died halfway


def docker_registry_tags(host: str, repo: str) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://{host}/v2/{repo}/tags/list", timeout=5) as resp:
            return list(json.loads(resp.read()).get("tags") or [])
    except urllib.error.HTTPError:
        return []


def image_present(ref: str) -> bool:
    return bool(docker("image", "ls", "-q", ref, check=False))


def ok(flow: dict[str, Any], name: str) -> Any:
    """The step ran and the manager's call returned; its reply."""
    step = flow["steps"].get(name)
    assert step is not None, f"step {name} never ran: {sorted(flow['steps'])}"
    assert step["ok"], f"{name}: {step['error']}\n{step.get('remote') or ''}"
    return step.get("reply")


def anycast(flow: dict[str, Any], name: str, **body: Any) -> list[dict[str, Any]]:
    return [e for e in flow["queue"]["anycast"] if e.get("name") == name and "error" not in e
            and all(e["body"].get(k) == v for k, v in body.items())]


def broadcast(flow: dict[str, Any], name: str, **body: Any) -> list[dict[str, Any]]:
    return [e for e in flow["queue"]["broadcast"] if e.get("name") == name and "error" not in e
            and all(e["body"].get(k) == v for k, v in body.items())]


def kernels(flow: dict[str, Any]) -> dict[str, str]:
    ids = flow.get("kernel_ids")
    assert ids, f"the flow never created kernels: {flow['steps']}"
    return ids  # type: ignore[no-any-return]


# ───────────────────────────────────────────────────────────────── events, all of them


def test_every_stream_entry_and_pubsub_message_decodes(flow: dict[str, Any]) -> None:
    assert "queue" in flow, flow["steps"]
    assert flow["queue"]["failures"] == []
    assert flow["queue"]["anycast"] and flow["queue"]["broadcast"]


def test_every_event_names_the_agent_as_its_source(flow: dict[str, Any],
                                                   compat_node: CompatNode) -> None:
    sources = {e["source"] for e in flow["queue"]["anycast"] + flow["queue"]["broadcast"]}
    assert sources == {compat_node.agent.agent_id}


# kernel and session lifecycle events go both ways (anycast_and_broadcast_event): the
# scheduler consumes the stream, the event hub (SSE, bgtask waits) reads pub/sub
BOTH_WAYS = ("kernel_preparing", "kernel_pulling", "kernel_creating", "kernel_started",
             "kernel_terminated", "session_success", "session_failure")


@pytest.mark.parametrize("name", BOTH_WAYS)
def test_lifecycle_events_are_on_the_stream_and_on_pubsub_alike(flow: dict[str, Any],
                                                                 name: str) -> None:
    def bodies(entries: list[dict[str, Any]]) -> list[str]:
        return sorted(json.dumps(e["body"], sort_keys=True) for e in entries)

    on_stream = bodies(anycast(flow, name))
    assert on_stream, name
    assert bodies(broadcast(flow, name)) == on_stream


# ───────────────────────────────────────────────────────────────── images


def test_check_and_pull_is_answered(flow: dict[str, Any]) -> None:
    ok(flow, "check_and_pull")


@pytest.mark.parametrize("which", ["local_canonical", "remote_canonical"])
def test_an_image_already_present_gets_image_pull_finished_with_its_image_ref(
        flow: dict[str, Any], which: str) -> None:
    canonical = flow[which]
    events = anycast(flow, "image_pull_finished", image=canonical)
    assert events, flow["steps"].get("image_pull_events")
    # the manager resolves the image row by image_ref.canonical when image_ref is set
    assert all(e.get("image_ref_canonical") in (None, canonical) for e in events), events


def test_a_real_pull_reports_image_pull_started_and_finished(flow: dict[str, Any]) -> None:
    canonical = flow["pull_canonical"]
    started = anycast(flow, "image_pull_started", image=canonical)
    finished = anycast(flow, "image_pull_finished", image=canonical)
    assert started and finished, flow["steps"].get("image_pull_events")
    assert started[0]["image_ref_canonical"] in (None, canonical)
    assert flow["images_after"][canonical] is True  # pulled (again, for the batch kernel)


def test_a_create_that_must_pull_reports_kernel_pulling(flow: dict[str, Any]) -> None:
    """The batch kernel's image was purged before its create_kernels."""
    ids = kernels(flow)
    pulling = anycast(flow, "kernel_pulling", kernel_id=ids["batch"],
                      session_id=ids["batch_session"])
    assert pulling, [e.get("name") for e in flow["queue"]["anycast"]]
    assert broadcast(flow, "kernel_pulling", kernel_id=ids["batch"])
    assert len(anycast(flow, "image_pull_finished", image=flow["pull_canonical"])) == 2


def test_a_failed_pull_reports_image_pull_failed(flow: dict[str, Any]) -> None:
    canonical = flow["missing_canonical"]
    failed = anycast(flow, "image_pull_failed", image=canonical)
    assert failed, flow["steps"].get("image_pull_events")
    assert failed[0]["body"]["msg"], failed


# ───────────────────────────────────────────────────────────────── kernels


def test_create_local_network_and_create_kernels_are_answered(flow: dict[str, Any]) -> None:
    ok(flow, "create_local_network")
    ok(flow, "create_kernels")
    ok(flow, "create_kernels_batch")


@pytest.mark.parametrize("role", ["main", "sub", "batch"])
def test_kernel_started_decodes_per_kernel_on_stream_and_pubsub(flow: dict[str, Any],
                                                                role: str) -> None:
    ids = kernels(flow)
    kid = ids[role]
    sid = ids["batch_session" if role == "batch" else "session"]
    assert kid in flow["started"], flow["steps"].get(f"kernel_started:{kid}")
    info = flow["started"][kid]["body"]["creation_info"]
    assert info["container_id"] and isinstance(info["kernel_host"], str)
    if role != "sub":  # the image's service ports belong to the session's main kernel
        assert "http-server" in {p["name"] for p in info["service_ports"]}, info
    assert broadcast(flow, "kernel_started", kernel_id=kid, session_id=sid)
    for before in ("kernel_preparing", "kernel_creating"):
        assert anycast(flow, before, kernel_id=kid), before


@pytest.mark.parametrize("role", ["main", "sub", "batch"])
def test_kernel_started_used_devices_add_up_to_the_requested_slots(flow: dict[str, Any],
                                                                   role: str) -> None:
    """The manager records a kernel's occupied slots as the sum of used_devices."""
    kid = kernels(flow)[role]
    assert kid in flow["occupied"], flow["steps"].get(f"kernel_started:{kid}")
    requested = {k: Decimal(v) for k, v in flow["requested"].items()}
    occupied = {k: Decimal(v) for k, v in flow["occupied"][kid].items()}
    assert occupied == requested, flow["started"][kid]["body"]["creation_info"]["used_devices"]


def test_destroy_kernel_with_a_lifecycle_reason_enum_and_kernel_terminated(
        flow: dict[str, Any]) -> None:
    ids = kernels(flow)
    for role in ("main", "sub", "batch"):
        kid = ids[role]
        ok(flow, f"destroy_kernel:{kid}")
        assert kid in flow["terminated"], flow["steps"].get(f"kernel_terminated:{kid}")
        assert broadcast(flow, "kernel_terminated", kernel_id=kid)
    assert flow["terminated"][ids["main"]]["body"]["reason"] == "user-requested"


def test_running_kernels_have_a_fresh_presence_mark(flow: dict[str, Any]) -> None:
    """Without one, every sweep of the manager's terminator asks check_running per kernel."""
    ids = kernels(flow)
    assert "presence" in flow, flow["steps"].get("kernel_presence")
    for role in ("main", "sub"):
        status = flow["presence"][ids[role]]
        assert status is not None, flow["presence"]
        assert status["presence"] == "healthy", status
        assert isinstance(status["last_presence"], int), status


def test_check_running_true_while_running_and_false_after(flow: dict[str, Any]) -> None:
    assert ok(flow, "check_running") is True
    # the terminator terminates a stale kernel only when check_running `is False`
    assert ok(flow, "check_running_after") is False
    assert ok(flow, "check_running_phantom") is False


def test_destroy_local_network_removes_the_bridge(flow: dict[str, Any]) -> None:
    ok(flow, "destroy_local_network")
    assert flow["networks_after"] == ""


def test_sync_kernel_registry_reports_a_kernel_it_lacks_as_terminated(
        flow: dict[str, Any]) -> None:
    ok(flow, "sync_kernel_registry")
    phantom = flow["phantom"]
    events = anycast(flow, "kernel_terminated", kernel_id=phantom["kernel"],
                     session_id=phantom["session"])
    assert [e["body"]["reason"] for e in events] == ["already-terminated"], events
    # the kernels it has are left alone
    ids = kernels(flow)
    assert flow["terminated"][ids["main"]]["body"]["reason"] == "user-requested"


def test_assign_port(flow: dict[str, Any]) -> None:
    port = ok(flow, "assign_port")
    assert isinstance(port, int) and 0 < port < 65536


def test_scan_gpu_alloc_map_values_read_as_decimals(flow: dict[str, Any]) -> None:
    ok(flow, "scan_gpu_alloc_map")
    assert isinstance(flow["gpu_alloc_map"], dict)


# ───────────────────────────────────────────────────────────────── code


def test_execute_query_as_the_manager_reads_it(flow: dict[str, Any]) -> None:
    result = ok(flow, "execute_query")
    last = result["replies"][-1]
    assert last["status"] == "finished" and last["exitCode"] == 0, result
    assert ["stdout", "42\n"] in [list(c) for c in result["console"]], result


def test_execute_continue_until_finished(flow: dict[str, Any]) -> None:
    result = ok(flow, "execute_continue")
    statuses = [r["status"] for r in result["replies"]]
    assert statuses[0] == "continued" and statuses[-1] == "finished", statuses
    text = "".join(c[1] for c in result["console"] if c[0] == "stdout")
    assert "early" in text and "late" in text, result


def test_execute_batch_mode(flow: dict[str, Any]) -> None:
    ok(flow, "upload_file")
    result = ok(flow, "execute_batch")
    assert result["replies"][-1]["status"] == "finished", result
    assert result["replies"][-1]["exitCode"] == 0, result
    assert "batch-mode-ok" in "".join(c[1] for c in result["console"] if c[0] == "stdout")


def test_execute_input_mode_after_waiting_input(flow: dict[str, Any]) -> None:
    result = ok(flow, "execute_input")
    statuses = [r["status"] for r in result["replies"]]
    assert "waiting-input" in statuses and statuses[-1] == "finished", result
    waiting = next(r for r in result["replies"] if r["status"] == "waiting-input")
    assert isinstance(waiting["options"], dict), waiting  # the client reads is_password there
    assert "hi berth" in "".join(c[1] for c in result["console"] if c[0] == "stdout")


def test_execution_events_of_the_batch_job_decode(flow: dict[str, Any]) -> None:
    sid = kernels(flow)["batch_session"]
    assert anycast(flow, "execution_started", session_id=sid)
    assert anycast(flow, "execution_finished", session_id=sid)


def test_a_code_worker_oom_is_an_agent_error_and_the_kernel_goes_on(flow: dict[str, Any]
                                                                    ) -> None:
    ok(flow, "execute_oom")
    errors = anycast(flow, "agent_error")
    assert errors, flow["steps"].get("agent_error")
    body = errors[0]["body"]
    assert body["severity"] == "WARNING" and body["message"], body
    assert all(isinstance(v, str) for v in body["context_env"].values()), body
    after = ok(flow, "execute_after_oom")
    assert after["replies"][-1]["status"] == "finished", after
    assert "alive" in "".join(c[1] for c in after["console"] if c[0] == "stdout")


def test_get_completions_parses_as_code_completion_resp(flow: dict[str, Any]) -> None:
    ok(flow, "get_completions")
    assert flow["completions"]["status"] in {"finished", "failed"}, flow["completions"]


def test_interrupt_kernel_reply_is_a_mapping(flow: dict[str, Any]) -> None:
    ok(flow, "interrupt_kernel")
    assert isinstance(flow["interrupt_as_dict"], dict)


def test_start_service_and_shutdown_service(flow: dict[str, Any]) -> None:
    ok(flow, "start_service")
    assert flow["start_service_status"] in {"started", "running"}, flow.get(
        "start_service_error")
    assert flow["http_server_status"] == 200
    ok(flow, "shutdown_service")


def test_trigger_batch_execution_ends_in_session_success(flow: dict[str, Any]) -> None:
    sid = kernels(flow)["batch_session"]
    ok(flow, "trigger_batch_execution")
    assert anycast(flow, "session_success", session_id=sid), flow["steps"].get(
        "session_success")
    assert broadcast(flow, "session_success", session_id=sid)


def test_a_failing_batch_job_ends_in_session_failure_task_failed(flow: dict[str, Any]) -> None:
    sid = kernels(flow)["batch_session"]
    ok(flow, "trigger_batch_execution_failing")
    failures = anycast(flow, "session_failure", session_id=sid, reason="task-failed")
    assert [e["body"]["exit_code"] for e in failures] == [3], flow["steps"].get(
        "session_failure_task_failed")
    assert broadcast(flow, "session_failure", session_id=sid, reason="task-failed")


def test_an_overrunning_batch_job_ends_in_execution_timeout(flow: dict[str, Any]) -> None:
    sid = kernels(flow)["batch_session"]
    ok(flow, "trigger_batch_execution_timeout")
    assert anycast(flow, "execution_timeout", session_id=sid), flow["steps"].get(
        "execution_timeout")
    assert anycast(flow, "session_failure", session_id=sid, reason="task-timeout")


# ───────────────────────────────────────────────────────────────── files and logs


def test_upload_download_file_download_single_list_files(flow: dict[str, Any]) -> None:
    ok(flow, "upload_file_data")
    ok(flow, "download_file")
    assert "hello from the manager\n" in flow["download_file_members"].values(), flow[
        "download_file_members"]
    ok(flow, "download_single")
    assert flow["download_single"] == "hello from the manager\n"
    ok(flow, "list_files")
    listing = flow["list_files"]
    assert isinstance(listing, dict), listing
    files = listing["files"]
    if isinstance(files, str):  # the legacy form: a JSON string
        files = json.loads(files)
    assert "hello.txt" in [f["filename"] for f in files], listing


def test_get_logs_reply_holds_logs_as_str(flow: dict[str, Any]) -> None:
    ok(flow, "get_logs")
    assert flow["logs_is_str"] is True


def test_do_sync_kernel_logs_lets_the_manager_drain_the_container_log(flow: dict[str, Any]
                                                                      ) -> None:
    main = kernels(flow)["main"]
    assert "synced_log" in flow, flow["steps"].get("do_sync_kernel_logs")
    assert flow["synced_container_id"] == flow["started"][main]["body"]["creation_info"][
        "container_id"]
    assert flow["logs_first_line"], "get_logs returned no log"
    assert flow["logs_first_line"] in flow["synced_log"], flow["synced_log"][-2000:]


# ───────────────────────────────────────────────────────────────── commit, push, purge


def test_commit_with_label_name_keys_ends_in_bgtask_done(flow: dict[str, Any]) -> None:
    reply = ok(flow, "commit")
    task_id = reply["bgtask_id"]
    uuid.UUID(task_id)  # BgtaskDoneEvent.task_id is a UUID
    outcome = flow["commit_bgtask"]
    assert outcome["event"] is not None, outcome
    assert outcome["event"]["name"] == "bgtask_done", outcome
    assert outcome["cached"] is not None and "error" not in outcome["cached"], outcome
    assert outcome["cached"]["body"]["task_id"] == task_id


def test_commit_status_reads_ready_once_the_commit_is_done(flow: dict[str, Any]) -> None:
    ok(flow, "commit")
    assert flow["commit_status_during"] in {"ongoing", "ready"}, flow["commit_status_during"]
    assert flow["commit_status_after"] == "ready"


def test_commit_to_file_as_commit_session_to_file_sends_it(flow: dict[str, Any]) -> None:
    reply = ok(flow, "commit_to_file")
    assert isinstance(reply, dict), reply
    outcome = flow.get("commit_to_file_bgtask")
    if outcome is not None:  # a background task: it must end as the manager reads bgtasks
        assert outcome["event"] is not None and outcome["event"]["name"] == "bgtask_done", (
            outcome)
    assert list(flow["commit_files"]) == [flow["commit_filename"]]


def test_push_image_to_the_registry_ends_in_bgtask_done(flow: dict[str, Any]) -> None:
    reply = ok(flow, "push_image")
    outcome = flow["push_bgtask"]
    assert outcome["event"] is not None and outcome["event"]["name"] == "bgtask_done", outcome
    assert outcome["cached"] is not None and "error" not in outcome["cached"], outcome
    assert outcome["cached"]["body"]["task_id"] == reply["bgtask_id"]
    tag = flow["commit_canonical"].rsplit(":", 1)[1]
    assert tag in flow["catalog"], flow["catalog"]


def test_a_failing_push_ends_in_bgtask_failed(flow: dict[str, Any]) -> None:
    reply = ok(flow, "push_image_absent")
    outcome = flow["push_absent_bgtask"]
    assert outcome["event"] is not None and outcome["event"]["name"] == "bgtask_failed", outcome
    assert outcome["event"]["body"]["message"], outcome  # BgtaskFailedError(extra_msg=...)
    assert outcome["cached"]["body"]["task_id"] == reply["bgtask_id"], outcome


def test_purge_images_reply_parses_and_removes_them(flow: dict[str, Any]) -> None:
    ok(flow, "purge_images")
    responses = flow["purge"]["responses"]
    assert [r["error"] for r in responses] == [None, None, None], responses
    assert [r["image"] for r in responses] == [flow["images_after_purge"], flow[
        "commit_canonical"], flow["pull_canonical"]], responses
    assert not flow["images_after"][flow["images_after_purge"]]
    assert not flow["images_after"][flow["commit_canonical"]]


def test_bgtask_events_decode_on_pubsub(flow: dict[str, Any]) -> None:
    names = {e["name"] for e in flow["queue"]["broadcast"] if "error" not in e}
    assert "bgtask_done" in names, names


def test_no_step_failed(flow: dict[str, Any]) -> None:
    """The summary: every call of the flow was answered as the manager expects."""
    failed = {k: v["error"] for k, v in flow["steps"].items() if not v["ok"]}
    assert failed == {}


