"""A data scientist's kernel (issue 13), driven the way its user drives it: a real headless
Chromium (Debian's, through Playwright) opens JupyterLab and the ttyd terminal of a
berth/python-notebook kernel on their host ports, through the agent's service TLS proxy
(JupyterLab's and ttyd's websockets included), and an OpenSSH client logs in to its sshd
with the session keypair the Manager sent in ``internal_data.ssh_keypair``.

What each step proves is read back through the agent, not from the page: files the notebook
and the terminal wrote come through the agent's file RPC (``download_single``). A package
``pip install --user``-ed in the terminal is imported by the notebook and over SSH: one
Python. A restart keeps the notebook files; a destroyed kernel's ports close and go back to
the pool (the agent has exactly the ports one notebook kernel takes).

A screenshot of each page is saved under the test's tmp dir (its path is printed).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import io
import json
import socket
import ssl
import subprocess
import time
import uuid
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from support.procs import AgentProcess, binary, port_block

from .conftest import BUSYBOX, NOTEBOOK, PORT_BASE, PORT_SLOTS, PORTS

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
# Chromium on a closed network: no background fetches, no QUIC, no sandbox (we are root).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
PROBE_VALUE = f"probe-{uuid.uuid4().hex[:8]}"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest},{len(data)}"


def probe_wheel() -> tuple[str, bytes]:
    """A one-module wheel (``import berth_probe; berth_probe.VALUE``) for a --user install."""
    files = {
        "berth_probe.py": f"VALUE = {PROBE_VALUE!r}\n".encode(),
        "berth_probe-1.0.dist-info/METADATA":
            b"Metadata-Version: 2.1\nName: berth-probe\nVersion: 1.0\n",
        "berth_probe-1.0.dist-info/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: berth-test\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
    }
    record = "".join(f"{name},{_record_hash(data)}\n" for name, data in files.items())
    record += "berth_probe-1.0.dist-info/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as whl:
        for name, data in files.items():
            whl.writestr(name, data)
        whl.writestr("berth_probe-1.0.dist-info/RECORD", record)
    return "berth_probe-1.0-py3-none-any.whl", buf.getvalue()


def ssh_keypair(key: Path) -> tuple[str, str, Path]:
    subprocess.run([binary("ssh-keygen", "openssh-client"), "-q", "-t", "ed25519", "-N", "",
                    "-C", "berth-session", "-f", str(key)], check=True)
    return (key.with_suffix(".pub").read_text(), key.read_text(), key)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.3)


async def file_names(client: Any, kernel_id: str) -> set[str]:
    """Names in the kernel's /home/work, through the agent's list_files RPC."""
    listing = await client.list_files(kernel_id, "/home/work")
    return {entry["filename"] for entry in json.loads(listing["files"])}


def https_get(port: int, path: str, token: str | None) -> tuple[int, bytes]:
    """GET over the agent's TLS proxy (self-signed test certificate)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=ctx)
    try:
        conn.request("GET", path, headers={"Authorization": f"token {token}"} if token else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def tls_handshake(port: int) -> str:
    """The certificate subject the proxy presents on a host port (TLS really terminates there)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        return str(tls.version())


@pytest.mark.timeout(300)
async def test_jupyterlab_terminal_and_ssh_in_a_real_browser(
        tls_agent: AgentProcess, tmp_path: Path) -> None:
    from playwright.async_api import TimeoutError as PlaywrightTimeout
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh --test-services "
                    "(Debian package chromium)")
    ssh = binary("ssh", "openssh-client")
    screens = tmp_path / "screens"
    screens.mkdir()
    public, private, key_file = ssh_keypair(tmp_path / "session_key")
    other = ssh_keypair(tmp_path / "other")[2]  # a key the session did not send
    token = uuid.uuid4().hex
    sid = kid = str(uuid.uuid4())
    config = {"image": {"canonical": NOTEBOOK, "is_local": True},
              "resource_slots": {"cpu": "1", "mem": "1g"},
              "internal_data": {"ssh_keypair": {"public_key": public, "private_key": private}}}

    async with tls_agent.client(timeout=120) as c:
        [created] = await c.create_kernels(sid, [kid], [config], {})
        ports = {p["name"]: p["host_ports"][0] for p in created["service_ports"]}
        assert set(ports) == {"jupyter", "jupyterlab", "ttyd", "sshd", "tensorboard"}, created
        # the session keypair is where Backend.AI puts it, the kernel user's, 0600
        assert (await c.download_single(kid, ".ssh/authorized_keys")).decode() == public
        assert (await c.download_single(kid, "id_container")).decode() == private
        wheel_name, wheel = probe_wheel()
        await c.upload_file(kid, wheel_name, wheel)

        for name, opts in (("jupyterlab", {"envs": {"JUPYTER_TOKEN": token}}),
                           ("ttyd", {}), ("sshd", {})):
            started = await c.start_service(kid, name, opts)
            assert started["status"] in ("started", "running"), (name, started)
        # HTTP services are TLS on their host ports (the agent's proxy); sshd is plain TCP
        assert tls_handshake(ports["jupyterlab"]).startswith("TLS")
        assert tls_handshake(ports["ttyd"]).startswith("TLS")

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(ignore_https_errors=True,
                                                    viewport={"width": 1280, "height": 800})
                # -- the terminal: a --user install, and a file written by the kernel user
                term = await context.new_page()
                await term.goto(f"https://127.0.0.1:{ports['ttyd']}/")
                await term.wait_for_selector(".xterm-helper-textarea", state="attached",
                                             timeout=30_000)
                await term.wait_for_timeout(1000)  # the websocket and the shell come up
                await term.click(".xterm-screen")
                await term.keyboard.type(
                    f"pip install --user --no-index ./{wheel_name} && "
                    "python3 -c 'import berth_probe; print(berth_probe.VALUE)' > terminal.txt"
                    " && id -un >> terminal.txt && command -v pip >> terminal.txt\n")

                async def terminal_file() -> bytes | None:
                    try:
                        data = await c.download_single(kid, "terminal.txt")
                    except Exception:  # noqa: BLE001 - not there yet
                        return None
                    return data if data.count(b"\n") >= 3 else None

                written = await wait_for(terminal_file, 60, "terminal.txt from the ttyd page")
                assert written.decode().split() == [PROBE_VALUE, "work", "/opt/python/bin/pip"], \
                    written
                await term.screenshot(path=str(screens / "ttyd.png"))

                # -- JupyterLab: a new notebook, a cell that writes a file
                lab = await context.new_page()
                await lab.goto(f"https://127.0.0.1:{ports['jupyterlab']}/lab?token={token}")
                card = lab.locator(".jp-Launcher-section", has=lab.locator(
                    ".jp-Launcher-sectionTitle", has_text="Notebook")).locator(
                    ".jp-LauncherCard").first
                await card.wait_for(timeout=60_000)
                await card.click()
                editor = lab.locator(".jp-Notebook .jp-Cell .cm-content").first
                await editor.wait_for(timeout=60_000)
                # the kernel is up (its status reaches the page over the websocket)
                await lab.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(
                    timeout=60_000)
                news = lab.locator(".jp-toast-button", has_text="No")
                if await news.count():
                    await news.first.click()
                await editor.click()
                await lab.keyboard.insert_text(
                    "import berth_probe, pathlib, sys\n"
                    "pathlib.Path('notebook.txt').write_text(berth_probe.VALUE + '\\n' "
                    "+ sys.executable)\n"
                    "print('written', berth_probe.VALUE)")
                await lab.keyboard.press("Shift+Enter")
                output = lab.locator(".jp-OutputArea-output", has_text=f"written {PROBE_VALUE}")
                await output.first.wait_for(timeout=60_000)
                await lab.keyboard.press("Control+s")  # save (a first save may offer a rename)
                rename = lab.locator(".jp-Dialog button", has_text="Rename")
                try:
                    await rename.first.click(timeout=3000)
                except PlaywrightTimeout:
                    pass

                async def saved() -> bool:
                    text = await c.download_single(kid, "Untitled.ipynb")
                    try:
                        cells = json.loads(text)["cells"]
                    except ValueError:  # caught while Jupyter rewrites the file: not yet
                        return False
                    return any("berth_probe" in "".join(cell["source"]) for cell in cells)

                await wait_for(saved, 30, "the notebook saved with its cell")
                await lab.screenshot(path=str(screens / "jupyterlab.png"))
            except BaseException:
                for i, page in enumerate(context.pages):  # what the browser showed, for the report
                    await page.screenshot(path=str(screens / f"failed-{i}.png"))
                print(f"screenshots: {screens}")
                raise
            finally:
                await browser.close()

        # the cell ran in the kernel, with the runner's Python, and its file is in the scratch
        notebook_txt = (await c.download_single(kid, "notebook.txt")).decode().split("\n")
        assert notebook_txt == [PROBE_VALUE, "/opt/python/bin/python3"], notebook_txt
        names = await file_names(c, kid)
        assert "Untitled.ipynb" in names, names

        # -- SSH with the session's private key, as the kernel user
        ssh_cmd = [ssh, "-i", str(key_file), "-p", str(ports["sshd"]), "-o", "BatchMode=yes",
                   "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                   "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}",
                   "-o", "ConnectTimeout=10", "work@127.0.0.1",
                   ("cat notebook.txt; echo; python3 -c "
                    "'import sys, berth_probe; print(berth_probe.VALUE, sys.executable)'")]
        done = await asyncio.to_thread(subprocess.run, ssh_cmd, capture_output=True, text=True,
                                       timeout=60)
        assert done.returncode == 0, done.stderr
        # the notebook's file, and the terminal's package in the same Python as the notebook's
        assert done.stdout.split() == [PROBE_VALUE, "/opt/python/bin/python3", PROBE_VALUE,
                                       "/opt/python/bin/python3"], done.stdout
        # a key the session did not send is refused
        refused = await asyncio.to_thread(
            subprocess.run, [*ssh_cmd[:2], str(other), *ssh_cmd[3:-1], "true"],
            capture_output=True, text=True, timeout=60)
        assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused

        # -- the classic notebook and TensorBoard answer on their TLS host ports too
        started = await c.start_service(kid, "jupyter", {"envs": {"JUPYTER_TOKEN": token}})
        assert started["status"] in ("started", "running"), started
        status, _ = await asyncio.to_thread(https_get, ports["jupyter"], "/api/status", token)
        assert status == 200
        status, _ = await asyncio.to_thread(https_get, ports["jupyter"], "/api/status", None)
        assert status == 403  # no token, no Jupyter
        started = await c.start_service(kid, "tensorboard", {})
        assert started["status"] in ("started", "running"), started
        status, body = await asyncio.to_thread(https_get, ports["tensorboard"], "/", None)
        assert status == 200 and b"TensorBoard" in body, body[:200]

        # -- a restart keeps the notebook files
        await c.restart_kernel(sid, kid, None, {})
        names = await file_names(c, kid)
        assert {"Untitled.ipynb", "notebook.txt", "terminal.txt"} <= names, names
        cells = json.loads(await c.download_single(kid, "Untitled.ipynb"))["cells"]
        assert any(PROBE_VALUE in json.dumps(cell.get("outputs")) for cell in cells), cells

        # -- a destroyed kernel's ports close and go back to the pool
        host_ports = list(ports.values())
        await c.destroy_kernel(kid, sid)
        still = [p for p in host_ports if await asyncio.to_thread(port_open, p)]
        assert not still, f"host ports still open after destroy: {still}"
        # the agent's whole range is the nine ports that kernel held: a new kernel gets some
        again = str(uuid.uuid4())
        [small] = await c.create_kernels(again, [again], [{
            "image": {"canonical": BUSYBOX, "is_local": True},
            "resource_slots": {"cpu": "0.25", "mem": "96m"}}], {})
        low, high = port_block(PORT_BASE, PORTS, slots=PORT_SLOTS)
        reused = {p["host_ports"][0] for p in small["service_ports"]}
        assert reused and all(low <= p <= high for p in reused), (low, high, small)
        await c.destroy_kernel(again, again)

    print(f"screenshots: {screens}")
