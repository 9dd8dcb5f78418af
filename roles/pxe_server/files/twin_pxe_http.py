#!/usr/bin/python3
"""twin-pxe web server: serves the preseeds and takes each install's report.

``GET /<path>`` serves files under --http-root (the per-host preseeds).
``GET /installed/<mac with dashes>`` is the last step of a machine's install
(its preseed's late_command): the machine's boot entries are overwritten
with the local-disk ones (pxelinux.cfg/default, grub.cfg-local), so its next
network boot starts its disk instead of the installer, and a marker
``<state-dir>/installed/<mac>`` records the address it reported from. The
pxe_server role reads the markers, keeps the entries on local boot, and
removes a marker when the host's pxe_reinstall is set.

Standard library only: it runs on the PXE server's system Python.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAC = re.compile(r"^/installed/((?:[0-9a-f]{2}-){5}[0-9a-f]{2})$")


class Handler(SimpleHTTPRequestHandler):
    """Static files, plus the install reports."""

    state_dir: Path
    pxelinux_dir: Path
    grub_dir: Path

    def do_GET(self) -> None:
        match = MAC.match(self.path)
        if match is None:
            super().do_GET()
            return
        dashes = match.group(1)
        entry = self.pxelinux_dir / f"01-{dashes}"
        if not entry.is_file():
            self.send_error(404, "no boot entry for this machine")
            return
        # Overwrite in place: the files keep the owner and mode the role gave them.
        shutil.copyfile(self.pxelinux_dir / "default", entry)
        grub_entry = self.grub_dir / f"grub.cfg-{dashes.replace('-', ':')}"
        if grub_entry.is_file():
            shutil.copyfile(self.grub_dir / "grub.cfg-local", grub_entry)
        report = {"address": self.client_address[0], "time": int(time.time())}
        (self.state_dir / "installed" / dashes).write_text(json.dumps(report) + "\n")
        body = b"installed: next network boot starts the local disk\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def list_directory(self, path: str) -> None:
        """No listings: a machine asks for its own preseed by name."""
        self.send_error(404, "no listing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http-root", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--pxelinux-dir", type=Path, required=True)
    parser.add_argument("--grub-dir", type=Path, required=True)
    args = parser.parse_args()
    Handler.state_dir = args.state_dir
    Handler.pxelinux_dir = args.pxelinux_dir
    Handler.grub_dir = args.grub_dir
    handler = partial(Handler, directory=str(args.http_root))
    ThreadingHTTPServer((args.bind, args.port), handler).serve_forever()


if __name__ == "__main__":
    main()
