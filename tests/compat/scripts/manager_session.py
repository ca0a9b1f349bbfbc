"""A whole session's life as the 26.9.6 manager drives it, every argument built with the
manager's own types, every reply consumed the way its callers consume it, every event decoded
with its own classes.

Before acting the script opens the manager's queue (consumer group ``manager`` at ``$``, the
``events_all`` subscription). Then: check_and_pull (a local image and an already present
registry image), create_local_network + create_kernels (main1 + sub1 sharing it, ClusterInfo
as the launcher builds it) and a single-kernel batch session, kernel_started per kernel,
execute (query, query+continue, batch), get_completions, interrupt_kernel, start_service /
shutdown_service, upload_file / download_file / download_single / list_files, get_logs,
check_running, sync_kernel_registry, scan_gpu_alloc_map, assign_port,
trigger_batch_execution (session_success), commit with LabelName labels and push_image
(bgtask_done on pub/sub and in the ``bgtask.{id}`` cache), purge_images, destroy_kernel with a
KernelLifecycleEventReason, kernel_terminated, destroy_local_network; finally every stream
entry and pub/sub message is decoded.

A step that fails is recorded (``steps[name] = {"ok": False, "error": ...}``) and the flow
goes on where it can, so one test per step names exactly what the manager rejected.

Environment (besides harness's): BERTH_LOCAL_IMAGE (``berth/python:3.11``), BERTH_IMAGE_ID
(its engine Id), BERTH_IMAGE_LABELS (JSON), BERTH_REGISTRY (``127.0.0.1:PORT``, a registry
that already holds nothing; the engine has BERTH_REGISTRY/berth/python:3.11 tagged),
BERTH_COMMIT_TAG (the tag the commit writes), BERTH_PURGE_IMAGE (a throwaway tag to purge),
BERTH_PULL_IMAGE (in the registry only), BERTH_SESSION_ID (the multi-kernel session's id).
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
import traceback
import urllib.request
import uuid
from collections.abc import Awaitable
from datetime import datetime
from decimal import Decimal
from typing import Any

from ai.backend.common.clients.valkey_client.valkey_container_log.client import (
    ValkeyContainerLogClient,
)
from ai.backend.common.clients.valkey_client.valkey_schedule.client import ValkeyScheduleClient
from ai.backend.common.clients.valkey_client.valkey_stat.client import ValkeyStatClient
from ai.backend.common.defs import REDIS_CONTAINER_LOG, REDIS_LIVE_DB, REDIS_STATISTICS_DB
from ai.backend.common.docker import ImageRef, LabelName
from ai.backend.common.dto.agent.response import CodeCompletionResp, PurgeImageResp, PurgeImagesResp
from ai.backend.common.dto.manager.rpc_request import PurgeImagesReq
from ai.backend.common.events.event_types.kernel.anycast import KernelStartedAnycastEvent
from ai.backend.common.events.event_types.kernel.types import KernelLifecycleEventReason
from ai.backend.common.types import (
    AgentId,
    AutoPullBehavior,
    ClusterInfo,
    CommitStatus,
    ImageRegistry,
    KernelCreationConfig,
    KernelId,
    ResourceSlot,
    ResourceSlotEntry,
    SessionId,
    SessionTypes,
)
from ai.backend.manager.views.sokovan.image import ImageConfigData
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dateutil.tz import tzutc
from harness import agent_client, env, main
from mq import ManagerQueue, valkey_target

steps: dict[str, dict[str, Any]] = {}


async def step(name: str, call: Awaitable[Any]) -> Any:
    """Run one manager call; record its outcome; return the reply (None when it failed)."""
    try:
        reply = await call
    except Exception as exc:  # noqa: BLE001 - recorded: the test names the step
        steps[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                       "remote": getattr(exc, "repr", None),
                       "traceback": traceback.format_exc()[-1500:]}
        return None
    steps[name] = {"ok": True, "reply": reply}
    return reply


def fail(name: str, why: str) -> None:
    steps[name] = {"ok": False, "error": why}


def image_config(canonical: str, project: str | None, registry: str, url: str,
                 is_local: bool) -> tuple[ImageConfigData, ImageRef]:
    """An image row as the manager resolves it (ImageConfigData) and the ImageRef the
    launcher derives from the same row."""
    ref = ImageRef.from_image_str(canonical, project, registry, architecture="x86_64",
                                  is_local=is_local)
    data = ImageConfigData(
        id=uuid.uuid4(), canonical=ref.canonical, architecture="x86_64", project=project,
        is_local=is_local, digest=env("BERTH_IMAGE_ID"),
        labels=json.loads(env("BERTH_IMAGE_LABELS")), registry_name=registry,
        registry_url=url, registry_username=None, registry_password=None)
    return data, ref


def ssh_keypair() -> dict[str, str]:
    """An RSA cluster keypair in the launcher's form ({"public_key", "private_key"})."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return {"public_key": public.decode(), "private_key": private.decode()}


def kernel_config(image: ImageConfigData, ref: ImageRef, kid: KernelId, sid: SessionId, *,
                  session_type: SessionTypes, role: str, idx: int, rank: int,
                  session_env: dict[str, str], startup_command: str | None = None,
                  cluster_mode: str = "single-node") -> KernelCreationConfig:
    """KernelCreationConfig with the launcher's keys and value types (launcher.py)."""
    cfg = image.to_image_config(AutoPullBehavior.DIGEST)
    hostname = f"{role}{idx}"
    return {
        "image": cfg, "kernel_id": str(kid), "session_id": str(sid),
        "owner_user_id": session_env["BACKENDAI_USER_UUID"], "owner_project_id": None,
        "network_id": str(sid), "session_type": session_type, "cluster_mode": cluster_mode,
        "cluster_role": role, "cluster_idx": idx, "cluster_hostname": hostname,
        "local_rank": rank, "uid": None, "main_gid": None, "supplementary_gids": [],
        "resource_slots": ResourceSlot({"cpu": Decimal(1), "mem": Decimal(256 * 2**20)}
                                       ).to_json(),
        "resource_opts": {},
        "environ": {
            **session_env, "BACKENDAI_KERNEL_ID": str(kid),
            "BACKENDAI_KERNEL_IMAGE": ref.canonical, "BACKENDAI_CLUSTER_ROLE": role,
            "BACKENDAI_CLUSTER_IDX": str(idx), "BACKENDAI_CLUSTER_LOCAL_RANK": str(rank),
            "BACKENDAI_CLUSTER_HOST": hostname,
            "BACKENDAI_SERVICE_PORTS": str(cfg.get("labels", {}).get(
                "ai.backend.service-ports", "")),
        },
        "mounts": [], "package_directory": (), "idle_timeout": 600,
        "bootstrap_script": None, "startup_command": startup_command, "internal_data": None,
        "auto_pull": AutoPullBehavior.DIGEST, "preopen_ports": [], "allocated_host_ports": [],
        "agent_addr": env("BERTH_AGENT_ADDR"), "scaling_group": "default", "endpoint_id": None,
    }


def session_environ(sid: SessionId, hosts: list[str], replicas: dict[str, int]
                    ) -> dict[str, str]:
    return {
        "BACKENDAI_USER_UUID": str(uuid.uuid4()), "BACKENDAI_USER_EMAIL": "compat@example.org",
        "BACKENDAI_USER_NAME": "compat", "BACKENDAI_SESSION_ID": str(sid),
        "BACKENDAI_SESSION_NAME": f"compat-{str(sid)[:8]}",
        "BACKENDAI_CLUSTER_SIZE": str(len(hosts)),
        "BACKENDAI_CLUSTER_REPLICAS": ",".join(f"{k}:{v}" for k, v in replicas.items()),
        "BACKENDAI_CLUSTER_HOSTS": ",".join(hosts), "BACKENDAI_ACCESS_KEY": "AKIACOMPAT",
        "BACKENDAI_PREOPEN_PORTS": "",
    }


async def run_to_end(client: Any, sid: SessionId, kid: KernelId, mode: str, code: str,
                     opts: dict[str, Any], flush_timeout: float,
                     answer: str | None = None) -> dict[str, Any]:
    """execute as the manager's REST handler calls it (major version 4 -> 3, the result keys
    picked as services/session/service.py does), followed the way the manager's client
    (exec_loop_sync) follows it: ``continue`` after continued/clean-finished/build-finished,
    ``input`` with ``answer`` after waiting-input, until finished."""
    run_id = uuid.uuid4().hex
    replies = []
    raw = await client.execute(sid, kid, 3, run_id, mode, code, opts, flush_timeout)
    for _ in range(60):
        replies.append({"status": raw["status"], "runId": raw["runId"],
                        "exitCode": raw.get("exitCode"), "options": raw.get("options"),
                        "files": raw.get("files"), "console": raw.get("console")})
        if raw["status"] == "finished":
            break
        if raw["status"] == "waiting-input":
            if answer is None:
                break
            mode, code, answer = "input", answer, None
        elif raw["status"] in ("continued", "clean-finished", "build-finished"):
            mode, code = "continue", ""
        else:
            break
        raw = await client.execute(sid, kid, 3, run_id, mode, code, {}, flush_timeout)
    return {"replies": replies, "console": [c for r in replies for c in (r["console"] or [])]}


def tar_members(blob: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
                for m in tar.getmembers()}


async def commit_status(kid: KernelId) -> str:
    """registry.get_commit_status: the Valkey key the agent keeps, READY when absent."""
    stat = await ValkeyStatClient.create(valkey_target(), db_id=REDIS_STATISTICS_DB,
                                         human_readable_name="compat-stat")
    try:
        [raw] = await stat.get_kernel_commit_statuses([str(kid)])
    finally:
        await stat.close()
    return str(raw, "utf-8") if raw is not None else CommitStatus.READY.value


async def drain_container_log(container_id: str) -> str:
    """What handle_kernel_log does on do_sync_kernel_logs: pop every chunk of
    containerlog.{container_id} with the manager's client and join their contents."""
    logs = await ValkeyContainerLogClient.create(valkey_target(), db_id=REDIS_CONTAINER_LOG,
                                                 human_readable_name="compat-container-log")
    buffer = io.BytesIO()
    try:
        for _ in range(await logs.container_log_len(container_id=container_id)):
            chunks = await logs.pop_container_logs(container_id=container_id)
            if chunks is None:
                buffer.write(b"(container log unavailable)\n")
                break
            for chunk in chunks:
                buffer.write(chunk.get_content())
        await logs.clear_container_logs(container_id=container_id)
    finally:
        await logs.close()
    return buffer.getvalue().decode(errors="replace")


async def bgtask_outcome(mq: ManagerQueue, task_id: str, timeout: float) -> dict[str, Any]:
    """What the manager's _wait_for_agent_bgtask waits for: a bgtask event for the id that is
    done/failed/cancelled, on pub/sub; and the same in the bgtask.{id} cache (EventFetcher)."""
    terminal = {"bgtask_done", "bgtask_failed", "bgtask_cancelled", "bgtask_partial_success"}

    def seen() -> dict[str, Any] | None:
        return next((e for e in mq.broadcast if e.get("name") in terminal
                     and "error" not in e and e["body"].get("task_id") == task_id), None)

    try:
        event = await mq.wait_for(f"bgtask end for {task_id}", seen, timeout)
    except TimeoutError as exc:
        return {"event": None, "error": str(exc), "cached": await mq.fetch_cached(
            f"bgtask.{task_id}")}
    return {"event": event, "cached": await mq.fetch_cached(f"bgtask.{task_id}")}


async def body() -> dict[str, Any]:
    registry_host = env("BERTH_REGISTRY")
    local_image = env("BERTH_LOCAL_IMAGE")  # berth/python:3.11
    local, local_ref = image_config(f"local/{local_image}", "berth", "local", "http://localhost",
                                    True)
    remote, remote_ref = image_config(f"{registry_host}/{local_image}", "berth", registry_host,
                                      f"http://{registry_host}", False)
    # in the registry only (the test pushed it and removed the engine's tag): a real pull
    pull, pull_ref = image_config(env("BERTH_PULL_IMAGE"), "berth", registry_host,
                                  f"http://{registry_host}", False)
    # in no registry at all: the pull fails
    missing, missing_ref = image_config(f"{registry_host}/berth/missing:{uuid.uuid4().hex[:8]}",
                                        "berth", registry_host, f"http://{registry_host}", False)
    out: dict[str, Any] = {"steps": steps, "local_canonical": local_ref.canonical,
                           "remote_canonical": remote_ref.canonical,
                           "pull_canonical": pull_ref.canonical,
                           "missing_canonical": missing_ref.canonical}

    async with ManagerQueue() as mq, agent_client() as client:
        # ---------------------------------------------------------------- images
        # one call per agent with every image its kernels need (launcher.py)
        await step("check_and_pull", client.check_and_pull({
            ref.canonical: data.to_image_config(AutoPullBehavior.DIGEST)
            for data, ref in ((local, local_ref), (remote, remote_ref), (pull, pull_ref),
                              (missing, missing_ref))}))

        def pulled() -> bool:
            done = {e["body"]["image"] for e in mq.anycast_named("image_pull_finished")}
            failed = {e["body"]["image"] for e in mq.anycast_named("image_pull_failed")}
            return ({local_ref.canonical, remote_ref.canonical, pull_ref.canonical} <= done
                    and missing_ref.canonical in failed)

        try:
            await mq.wait_for("image pull events", pulled, 90)
        except TimeoutError as exc:
            fail("image_pull_events", str(exc))

        # ---------------------------------------------------------------- sessions
        # the test names the session (it removes the session's network if this script dies)
        sid, batch_sid = SessionId(uuid.UUID(env("BERTH_SESSION_ID"))), SessionId(uuid.uuid4())
        main_kid, sub_kid, batch_kid = (KernelId(uuid.uuid4()) for _ in range(3))
        network = f"bai-singlenode-{sid}"
        await step("create_local_network", client.create_local_network(network))
        replicas = {"main": 1, "sub": 1}
        senv = session_environ(sid, ["main1", "sub1"], replicas)
        configs = [
            kernel_config(local, local_ref, main_kid, sid, session_type=SessionTypes.INTERACTIVE,
                          role="main", idx=1, rank=0, session_env=senv),
            kernel_config(local, local_ref, sub_kid, sid, session_type=SessionTypes.INTERACTIVE,
                          role="sub", idx=1, rank=1, session_env=senv),
        ]
        cluster: ClusterInfo = {
            "mode": "single-node", "size": 2, "replicas": replicas,
            "network_config": {"mode": "bridge", "network_name": network},
            "ssh_keypair": ssh_keypair(), "cluster_ssh_port_mapping": None}  # type: ignore[typeddict-item]
        benv = session_environ(batch_sid, ["main1"], {"main": 1})
        # the batch kernel runs the registry image, purged below before it is created: the
        # create pulls it (kernel_pulling)
        batch_cfg = kernel_config(pull, pull_ref, batch_kid, batch_sid,
                                  session_type=SessionTypes.BATCH, role="main", idx=1, rank=0,
                                  session_env=benv,
                                  startup_command="python3 -c \"print('batch-job-ok')\"",
                                  # the sessions column's server_default is the enum's name
                                  cluster_mode="SINGLE_NODE")
        batch_cluster: ClusterInfo = {
            "mode": "SINGLE_NODE", "size": 1, "replicas": {"main": 1}, "network_config": {},
            "ssh_keypair": ssh_keypair(), "cluster_ssh_port_mapping": None}  # type: ignore[typeddict-item]
        await step("create_kernels", client.create_kernels(
            sid, [main_kid, sub_kid], configs, cluster,
            {main_kid: local_ref, sub_kid: local_ref}))
        steps["create_kernels"].pop("reply", None)  # ignored by the manager

        started: dict[str, Any] = {}
        occupied: dict[str, dict[str, str]] = {}
        out["started"], out["occupied"] = started, occupied
        out["requested"] = {k: str(v) for k, v in configs[0]["resource_slots"].items()}

        async def wait_started(kid: KernelId, sess: SessionId) -> None:
            try:
                started[str(kid)] = (await mq.wait_for(
                    f"kernel_started of {kid}", lambda: mq.anycast_named(
                        "kernel_started", kernel_id=str(kid), session_id=str(sess)), 90))[0]
            except TimeoutError as exc:
                fail(f"kernel_started:{kid}", str(exc))
                return
            # update_kernel_status_running: the kernel's occupied slots are the sum of
            # creation_info.used_devices, collapsed with ResourceSlotEntry
            event = KernelStartedAnycastEvent.model_validate(started[str(kid)]["body"])
            slots = ResourceSlotEntry.inputs_to_resource_slot(
                event.creation_info.used_devices.slot_totals)
            occupied[str(kid)] = {str(k): str(v) for k, v in slots.items()}

        for kid in (main_kid, sub_kid):
            await wait_started(kid, sid)
        out["kernel_ids"] = {"main": str(main_kid), "sub": str(sub_kid),
                             "batch": str(batch_kid), "session": str(sid),
                             "batch_session": str(batch_sid)}
        if str(main_kid) not in started:
            out["queue"] = mq.summary()
            return out

        # ---------------------------------------------------------------- code
        out["execute_query"] = await step("execute_query", run_to_end(
            client, sid, main_kid, "query", "print(6 * 7)", {}, 2.0))
        out["execute_continue"] = await step("execute_continue", run_to_end(
            client, sid, main_kid, "query",
            "import time\nprint('early', flush=True)\ntime.sleep(2.5)\nprint('late')", {}, 0.3))
        out["execute_input"] = await step("execute_input", run_to_end(
            client, sid, main_kid, "query", "name = input('who? ')\nprint('hi', name)", {}, 2.0,
            answer="berth"))
        await step("upload_file", client.upload_file(main_kid, "job.py",
                                                     b"print('batch-mode-ok')\n"))
        out["execute_batch"] = await step("execute_batch", run_to_end(
            client, sid, main_kid, "batch", "", {"exec": "python3 job.py"}, 2.0))
        completions = await step("get_completions", client.get_completions(
            main_kid, "pri", {"row": 0, "col": 3, "line": "pri", "post": ""}))
        if completions is not None:
            parsed = CodeCompletionResp.from_dict(completions)
            out["completions"] = {"status": parsed.result.status, "error": parsed.result.error,
                                  "suggestions": list(parsed.result.suggestions)}
        interrupted = await step("interrupt_kernel", client.interrupt_kernel(main_kid))
        out["interrupt_as_dict"] = dict(interrupted) if interrupted is not None else None

        # ---------------------------------------------------------------- services
        svc = await step("start_service", client.start_service(main_kid, "http-server", {}))
        if svc is not None:
            out["start_service_status"] = svc["status"]
            if svc["status"] == "failed":
                out["start_service_error"] = svc["error"]
            ports = [p for p in started[str(main_kid)]["body"]["creation_info"]["service_ports"]
                     if p["name"] == "http-server"]
            if ports and ports[0]["host_ports"]:
                url = f"http://127.0.0.1:{ports[0]['host_ports'][0]}/"
                try:
                    status = await asyncio.to_thread(
                        lambda: urllib.request.urlopen(url, timeout=10).status)
                    out["http_server_status"] = status
                except OSError as exc:
                    out["http_server_status"] = f"{type(exc).__name__}: {exc}"
        await step("shutdown_service", client.shutdown_service(main_kid, "http-server"))

        # ---------------------------------------------------------------- files
        await step("upload_file_data", client.upload_file(main_kid, "data/hello.txt",
                                                          b"hello from the manager\n"))
        tar = await step("download_file", client.download_file(main_kid, "data/hello.txt"))
        if isinstance(tar, bytes):
            out["download_file_members"] = {k: v.decode(errors="replace")
                                            for k, v in tar_members(tar).items()}
            steps["download_file"]["reply"] = f"{len(tar)} bytes"
        single = await step("download_single", client.download_single(main_kid, "data/hello.txt"))
        if isinstance(single, bytes):
            out["download_single"] = single.decode(errors="replace")
            steps["download_single"]["reply"] = f"{len(single)} bytes"
        listing = await step("list_files", client.list_files(main_kid, "data"))
        out["list_files"] = json.loads(json.dumps(listing, default=str))
        logs = await step("get_logs", client.get_logs(main_kid))
        if logs is not None:
            out["logs_is_str"] = isinstance(logs["logs"], str)
            out["logs_first_line"] = str(logs["logs"]).splitlines()[0] if logs["logs"] else ""

        # ---------------------------------------------------------------- a worker's OOM
        # the code interpreter outgrows the kernel's memory: the kernel stays, the manager
        # hears an agent_error (warning)
        out["execute_oom"] = await step("execute_oom", run_to_end(
            client, sid, main_kid, "query", "hog = bytearray(600 * 2**20)", {}, 2.0))
        try:
            await mq.wait_for("agent_error", lambda: mq.anycast_named("agent_error"), 30)
        except TimeoutError as exc:
            fail("agent_error", str(exc))
        out["execute_after_oom"] = await step("execute_after_oom", run_to_end(
            client, sid, main_kid, "query", "print('alive')", {}, 2.0))

        # ---------------------------------------------------------------- presence
        # the terminator's stale-kernel sweep: check_kernel_presence_status_batch on the
        # schedule client (REDIS_LIVE_DB); a kernel without a fresh HEALTHY mark gets
        # check_running calls
        schedule = await ValkeyScheduleClient.create(valkey_target(), db_id=REDIS_LIVE_DB,
                                                     human_readable_name="compat-schedule")
        try:
            # the agent marks its running kernels once per stats cycle (5 s here): a kernel
            # started less than a cycle ago may not have its first mark yet
            for _ in range(24):
                presence = await schedule.check_kernel_presence_status_batch(
                    [main_kid, sub_kid], {AgentId(env("BERTH_AGENT_ID"))})
                if all(v is not None for v in presence.values()):
                    break
                await asyncio.sleep(0.5)
            out["presence"] = {str(k): None if v is None else {
                "presence": None if v.presence is None else str(v.presence),
                "last_presence": v.last_presence} for k, v in presence.items()}
        except Exception as exc:  # noqa: BLE001 - recorded: the test names it
            fail("kernel_presence", f"{type(exc).__name__}: {exc}")
        finally:
            await schedule.close()

        # ---------------------------------------------------------------- node-level
        out["check_running"] = await step("check_running", client.check_running(main_kid))
        # the manager lists the kernels it believes occupy this agent; one the agent does not
        # have must come back as kernel_terminated (already-terminated)
        phantom_kid, phantom_sid = KernelId(uuid.uuid4()), SessionId(uuid.uuid4())
        out["phantom"] = {"kernel": str(phantom_kid), "session": str(phantom_sid)}
        await step("sync_kernel_registry", client.sync_kernel_registry(
            [(main_kid, sid), (sub_kid, sid), (phantom_kid, phantom_sid)]))
        # the stale-kernel sweep asks check_running of a kernel the agent never had; only an
        # answer `is False` lets the manager terminate it
        out["check_running_phantom"] = await step("check_running_phantom",
                                                  client.check_running(phantom_kid))
        gpu = await step("scan_gpu_alloc_map", client.scan_gpu_alloc_map())
        if gpu is not None:
            # the manager stores it as JSON and its reader turns each value into a Decimal
            out["gpu_alloc_map"] = {k: str(Decimal(v)) for k, v in
                                    json.loads(json.dumps(dict(gpu))).items()}
        port = await step("assign_port", client.assign_port())
        out["assigned_port"] = port

        # ---------------------------------------------------------------- commit + push
        commit_ref = ImageRef.from_image_str(
            f"{registry_host}/berth/compat-commit:{env('BERTH_COMMIT_TAG')}", None,
            registry_host, architecture=local_ref.architecture, is_local=False)
        labels: dict[str | LabelName, str] = {
            LabelName.CUSTOMIZED_OWNER: f"user:{senv['BACKENDAI_USER_UUID']}",
            LabelName.CUSTOMIZED_NAME: "compat-commit",
            LabelName.CUSTOMIZED_ID: str(uuid.uuid4()),
            LabelName.FEATURES: "batch query uid-match user-input",
            LabelName.CUSTOMIZED_USER_EMAIL: "compat@example.org",
        }
        out["commit_canonical"] = commit_ref.canonical
        out["commit_labels"] = {str(k.value if isinstance(k, LabelName) else k): v
                                for k, v in labels.items()}
        commit = await step("commit", client.commit(
            main_kid, "compat_example.org", canonical=commit_ref.canonical,
            extra_labels=labels))  # type: ignore[arg-type]  # the manager passes LabelName keys
        if commit is not None:
            out["commit_status_during"] = await commit_status(main_kid)
            out["commit_bgtask"] = await bgtask_outcome(mq, str(commit["bgtask_id"]), 120)
            out["commit_status_after"] = await commit_status(main_kid)
            steps["commit"]["reply"] = {k: str(v) for k, v in commit.items()}
        # commit_session_to_file: the file name and canonical as registry.py builds them;
        # the reply goes to the REST caller as it is
        registry_name, _, filtered = local_ref.canonical.partition("/")
        image_name = filtered.partition("/")[2]
        now = datetime.now(tzutc()).strftime("%Y-%m-%dT%HH%MM%SS")
        filename = f"{now}_compat_{image_name}.tar.gz".replace(":", "-")
        out["commit_filename"] = filename
        to_file = await step("commit_to_file", client.commit(
            main_kid, "compat_example.org", filename=filename, extra_labels={},
            canonical=ImageRef.parse_image_str(local_ref.canonical, registry_name).canonical))
        if to_file is not None:
            steps["commit_to_file"]["reply"] = json.loads(json.dumps(dict(to_file), default=str))
            if "bgtask_id" in to_file:
                out["commit_to_file_bgtask"] = await bgtask_outcome(
                    mq, str(to_file["bgtask_id"]), 180)
        registry: ImageRegistry = {"name": registry_host, "url": f"http://{registry_host}",
                                   "username": None, "password": None}  # type: ignore[typeddict-item]
        push = await step("push_image", client.push_image(
            commit_ref, {**registry, "url": str(registry["url"])}))
        if push is not None:
            out["push_bgtask"] = await bgtask_outcome(mq, str(push["bgtask_id"]), 120)
            steps["push_image"]["reply"] = {k: str(v) for k, v in push.items()}
        # an image the node does not have: the push's bgtask must fail as the manager reads it
        absent = ImageRef.from_image_str(f"{registry_host}/berth/never-committed:x", None,
                                         registry_host, is_local=False)
        push_absent = await step("push_image_absent", client.push_image(
            absent, {**registry, "url": str(registry["url"])}))
        if push_absent is not None:
            out["push_absent_bgtask"] = await bgtask_outcome(
                mq, str(push_absent["bgtask_id"]), 60)
            steps["push_image_absent"]["reply"] = {k: str(v) for k, v in push_absent.items()}

        # ---------------------------------------------------------------- purge
        request = PurgeImagesReq(images=[env("BERTH_PURGE_IMAGE"), commit_ref.canonical,
                                         pull_ref.canonical],
                                 force=False, noprune=False)
        purged = await step("purge_images", client.purge_images(
            request.images, request.force, request.noprune))
        if purged is not None:
            resp = PurgeImagesResp(responses=[PurgeImageResp(image=r["image"],
                                                             error=r.get("error"))
                                              for r in purged["responses"]])
            out["purge"] = resp.as_dict()

        # ---------------------------------------------------------------- teardown
        for kid in (sub_kid, main_kid):
            await step(f"destroy_kernel:{kid}", client.destroy_kernel(
                kid, sid, KernelLifecycleEventReason.USER_REQUESTED, suppress_events=False))
        terminated: dict[str, Any] = {}
        out["terminated"] = terminated

        async def wait_terminated(kid: KernelId) -> None:
            try:
                terminated[str(kid)] = (await mq.wait_for(
                    f"kernel_terminated of {kid}", lambda: mq.anycast_named(
                        "kernel_terminated", kernel_id=str(kid)), 60))[0]
            except TimeoutError as exc:
                fail(f"kernel_terminated:{kid}", str(exc))

        for kid in (main_kid, sub_kid):
            await wait_terminated(kid)
        sync = mq.anycast_named("do_sync_kernel_logs", kernel_id=str(main_kid))
        if sync:
            out["synced_log"] = await drain_container_log(sync[0]["body"]["container_id"])
            out["synced_container_id"] = sync[0]["body"]["container_id"]
        else:
            fail("do_sync_kernel_logs", f"no do_sync_kernel_logs for {main_kid}")
        out["check_running_after"] = await step("check_running_after",
                                                client.check_running(main_kid))
        await step("destroy_local_network", client.destroy_local_network(network))

        # ---------------------------------------------------------------- batch session
        # (after the interactive one: a small node may not hold three kernels at once)
        await step("create_kernels_batch", client.create_kernels(
            batch_sid, [batch_kid], [batch_cfg], batch_cluster, {batch_kid: pull_ref}))
        steps["create_kernels_batch"].pop("reply", None)
        await wait_started(batch_kid, batch_sid)
        # ---------------------------------------------------------------- batch
        await step("trigger_batch_execution", client.trigger_batch_execution(
            batch_sid, batch_kid, batch_cfg["startup_command"] or "", None))
        try:
            await mq.wait_for("session_success", lambda: mq.anycast_named(
                "session_success", session_id=str(batch_sid)) and mq.broadcast_named(
                "session_success", session_id=str(batch_sid)), 60)
        except TimeoutError as exc:
            fail("session_success", str(exc))
        # the same kernel's job again, failing and then overrunning its time limit: the
        # manager's session_failure (task-failed, task-timeout) and execution_timeout
        await step("trigger_batch_execution_failing", client.trigger_batch_execution(
            batch_sid, batch_kid, "python3 -c 'import sys; sys.exit(3)'", None))
        try:
            await mq.wait_for("session_failure (task-failed)", lambda: mq.anycast_named(
                "session_failure", session_id=str(batch_sid), reason="task-failed"), 60)
        except TimeoutError as exc:
            fail("session_failure_task_failed", str(exc))
        await step("trigger_batch_execution_timeout", client.trigger_batch_execution(
            batch_sid, batch_kid, "sleep 60", 2.0))
        try:
            await mq.wait_for("execution_timeout", lambda: mq.anycast_named(
                "execution_timeout", session_id=str(batch_sid)) and mq.anycast_named(
                "session_failure", session_id=str(batch_sid), reason="task-timeout"), 60)
        except TimeoutError as exc:
            fail("execution_timeout", str(exc))

        await step(f"destroy_kernel:{batch_kid}", client.destroy_kernel(
            batch_kid, batch_sid, KernelLifecycleEventReason.TASK_FINISHED,
            suppress_events=False))
        await wait_terminated(batch_kid)
        await asyncio.sleep(1.0)  # the last broadcasts
        await mq.drain()
        out["queue"] = mq.summary()
    return out


if __name__ == "__main__":
    main(body, timeout=400)
