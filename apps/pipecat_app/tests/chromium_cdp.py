"""Debian's headless Chromium driven over the Chrome DevTools Protocol.

No browser is downloaded and no driver package is needed: Chromium is started
with ``--remote-debugging-port`` and spoken to over its websocket. A script
added before the page loads keeps every ``RTCPeerConnection`` the page makes
in ``window.__pcs`` so the test can read WebRTC stats (audio received).
Every request the page makes is recorded (``requests``), with the reason of
those that failed (``failed``), so a test can say what left the machine.

A test CA is trusted the way a user trusts one on Linux: in the NSS database
under ``$HOME/.pki/nssdb`` that Chromium reads (``trust_ca``, with NSS's
``certutil``), for a Chromium started with that ``home``; never with
``--ignore-certificate-errors``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CERTUTIL = shutil.which("certutil")


def trust_ca(home: Path, ca: Path) -> None:
    """Make ``ca`` a trusted issuer of web server certificates for a Chromium run with ``home``."""
    if CERTUTIL is None:
        raise FileNotFoundError(
            "certutil is not installed (libnss3-tools, scripts/apt-packages.txt)"
        )
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True, exist_ok=True)
    database = f"sql:{nssdb}"
    subprocess.run(
        [CERTUTIL, "-d", database, "-N", "--empty-password"], check=True, capture_output=True
    )
    subprocess.run(
        [CERTUTIL, "-d", database, "-A", "-t", "C,,", "-n", "twin test CA", "-i", str(ca)],
        check=True,
        capture_output=True,
    )


KEEP_PEER_CONNECTIONS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})();
"""

# Sum of the audio the page has received over WebRTC (energy is 0 for silence).
INBOUND_AUDIO = """
(async () => {
  let energy = 0, samples = 0, bytes = 0;
  for (const pc of window.__pcs || []) {
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        energy += s.totalAudioEnergy || 0;
        samples += s.totalSamplesReceived || 0;
        bytes += s.bytesReceived || 0;
      }
    });
  }
  return {energy, samples, bytes, pcs: (window.__pcs || []).length,
          states: (window.__pcs || []).map((pc) => pc.connectionState)};
})()
"""


class Chromium:
    """A headless Chromium with a fake microphone that plays ``wav`` in a loop."""

    def __init__(
        self,
        wav: Path,
        profile: Path,
        port: int,
        home: Path | None = None,
        video: Path | None = None,
    ) -> None:
        """``home``: the HOME Chromium reads its NSS certificate store from (``trust_ca``);
        ``video``: a y4m file (``C420``) the fake camera plays in a loop."""
        if CHROMIUM is None:
            raise FileNotFoundError("chromium is not installed (scripts/apt-packages.txt)")
        self.port = port
        self.log = profile.parent / "chromium.log"
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
                *([f"--use-file-for-fake-video-capture={video}"] if video else []),
                "--autoplay-policy=no-user-gesture-required",
                f"--remote-debugging-port={port}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
            env={**os.environ, "HOME": str(home)} if home is not None else None,
        )
        self._ids = itertools.count(1)
        self._urls: dict[str, str] = {}
        self.console: list[str] = []
        self.requests: list[str] = []
        self.failed: dict[str, str] = {}
        self._ws = connect(self._page_websocket(), max_size=None, open_timeout=10)

    def _page_websocket(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                targets = httpx.get(f"http://127.0.0.1:{self.port}/json/list", timeout=2).json()
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError("Chromium's DevTools endpoint did not come up")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; console messages that arrive meanwhile are kept."""
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("method") == "Runtime.consoleAPICalled":
                args = message["params"].get("args", [])
                self.console.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in args)
                )
            elif message.get("method") == "Runtime.exceptionThrown":
                self.console.append(str(message["params"]["exceptionDetails"]))
            elif message.get("method") == "Network.requestWillBeSent":
                self._urls[message["params"]["requestId"]] = message["params"]["request"]["url"]
                self.requests.append(message["params"]["request"]["url"])
            elif message.get("method") == "Network.loadingFailed":
                url = self._urls.get(message["params"]["requestId"], "?")
                self.failed[url] = message["params"].get("errorText", "")
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page (awaiting promises) and return the value."""
        result = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Load ``url`` with the peer-connection hook installed first."""
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Network.enable")
        self.call("Page.addScriptToEvaluateOnNewDocument", source=KEEP_PEER_CONNECTIONS)
        self.call("Page.navigate", url=url)

    def click_button(self, label: str, timeout: float = 30) -> None:
        """Click the first button whose text contains ``label`` once it appears."""
        script = f"""
        (() => {{
          const b = [...document.querySelectorAll('button')]
            .find((x) => x.innerText.toLowerCase().includes({json.dumps(label.lower())}));
          if (!b || b.disabled) return false;
          b.click();
          return true;
        }})()
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(script):
                return
            time.sleep(0.3)
        buttons = self.evaluate("[...document.querySelectorAll('button')].map(b => b.innerText)")
        raise TimeoutError(f"no enabled button {label!r} on the page; buttons: {buttons}")

    def wait_for_console(self, text: str, timeout: float = 30) -> None:
        """Wait until the page logs a console message containing ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.evaluate("0")  # lets the console messages that arrived be read
            if any(text in line for line in self.console):
                return
            time.sleep(0.3)
        raise TimeoutError(
            f"the page never logged {text!r}; failed requests: {self.failed}; "
            f"page: {self.console[-5:]}"
        )

    def wait_for_text(self, text: str, timeout: float = 30) -> str:
        """Wait until the page shows ``text``; return all the text it shows."""
        deadline = time.monotonic() + timeout
        shown = ""
        while time.monotonic() < deadline:
            shown = self.evaluate("document.body ? document.body.innerText : ''") or ""
            if text in shown:
                return shown
            time.sleep(0.3)
        raise TimeoutError(
            f"the page never showed {text!r}; it shows {shown[-500:]!r}; "
            f"failed requests: {self.failed}; page: {self.console[-5:]}"
        )

    def wait_for_location(self, path: str, timeout: float = 30) -> str:
        """Wait until the page's address has ``path``; return the address."""
        deadline = time.monotonic() + timeout
        href = ""
        while time.monotonic() < deadline:
            href = self.evaluate("location.href") or ""
            if href.split("?")[0].endswith(path) and self.evaluate("document.readyState") == (
                "complete"
            ):
                return href
            time.sleep(0.3)
        raise TimeoutError(f"the page never reached {path!r}; it is at {href!r}")

    def requests_outside(self, origin: str) -> list[str]:
        """Every URL the page asked for that is not under ``origin`` (data:/blob: aside)."""
        return [
            url
            for url in self.requests
            if not url.startswith((origin + "/", "data:", "blob:")) and url != origin
        ]

    def inbound_audio(self) -> dict[str, Any]:
        """WebRTC audio received by the page so far."""
        return self.evaluate(INBOUND_AUDIO)

    def close(self) -> None:
        """Close the DevTools socket and stop Chromium."""
        try:
            self._ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
