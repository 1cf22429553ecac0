"""Headless Chromium screenshots of token-protected pages (the Ray dashboard), over the DevTools protocol.

Chromium's ``--screenshot`` flag cannot send credentials, and with token authentication on the dashboard
answers 401 to every API call of the page. Here Chromium is driven through its DevTools websocket instead:
every request of the page carries ``Authorization: Bearer <token>`` (and the dashboard's
``ray-authentication-token`` cookie is set), then the page is captured once it has rendered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from testsupport.local_ray import free_ports, kill_processes_mentioning, wait_for

__all__ = ["capture_pages", "find_chromium"]


def find_chromium() -> str | None:
    """Path of Debian's ``chromium`` (or another Chrome-compatible browser), if installed."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


async def _capture(ws_url: str, pages: list[tuple], token: str | None, settle_s: float, size: tuple) -> list[str]:
    import aiohttp  # comes with ray[default]

    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        counter = 0
        texts: list[str] = []

        async def send(method: str, params: dict | None = None) -> dict:
            nonlocal counter
            counter += 1
            await ws.send_json({"id": counter, "method": method, "params": params or {}})
            while True:
                message = json.loads((await ws.receive()).data)
                if message.get("id") == counter:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    return message.get("result", {})

        await send("Page.enable")
        await send("Network.enable")
        width, height = size
        await send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        if token:
            await send("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {token}"}})
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(pages[0][0]))
            await send("Network.setCookie", {"name": "ray-authentication-token", "value": token, "url": origin})
        for url, out, *height in pages:
            if height:
                await send(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": height[0], "deviceScaleFactor": 1, "mobile": False},
                )
            await send("Page.navigate", {"url": url})
            await asyncio.sleep(settle_s)  # the dashboard is a single-page app: let it fetch and render
            shot = await send("Page.captureScreenshot", {"format": "png"})
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(base64.b64decode(shot["data"]))
            text = await send("Runtime.evaluate", {"expression": "document.body.innerText", "returnByValue": True})
            texts.append(str(text.get("result", {}).get("value", "")))
        return texts


def capture_pages(
    pages: list[tuple],
    *,
    token: str | None = None,
    settle_s: float = 8.0,
    size: tuple[int, int] = (1400, 900),
    chromium: str | None = None,
    timeout: float = 60.0,
) -> list[tuple[Path, str]]:
    """Screenshot each ``(url, png_path)`` (or ``(url, png_path, height)``) in one headless Chromium session.

    Returns ``(png_path, visible text of the page)`` per page, so callers can check what was rendered (a job
    table, not a token prompt).
    """
    browser = chromium or find_chromium()
    if browser is None:
        raise RuntimeError("no chromium found: apt-get install chromium")
    (port,) = free_ports(1)
    profile = tempfile.mkdtemp(prefix="mgchrome-")
    process = subprocess.Popen(
        [
            browser,
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def page_ws() -> str | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                targets = json.load(response)
            return next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None)

        ws_url = wait_for(page_ws, timeout, what="chromium DevTools")
        texts = asyncio.run(
            asyncio.wait_for(_capture(ws_url, pages, token, settle_s, size), timeout + settle_s * len(pages))
        )
        return [(page[1], text) for page, text in zip(pages, texts, strict=True)]
    finally:
        kill_processes_mentioning(profile, also=[process.pid])
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
