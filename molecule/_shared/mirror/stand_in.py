#!/usr/bin/python3
"""The executable inside the mirror's stand-in release archives. It is NOT the product.

mirror/tasks/start.yml stamps the STAND_IN line with the product and version
an archive stands in for and packs this file as the archive's only binary, so
a role's real install path (SHA256SUMS, download, unzip, version check) runs.
What it answers (see ../README.md):

- ``<product> version``: the real first line (``Consul v1.22.6``).
- ``consul validate DIR`` / ``nomad config validate DIR``: the call the roles
  make before a restart. It checks that DIR holds ``*.hcl`` files, not their
  syntax, and says so.
- ``<product> agent ...`` (the unit's ExecStart): only on a node where a
  scenario wrote ``/etc/<product>-stand-in.json``; it then serves
  ``GET /v1/status/leader`` at that file's ``url`` and nothing else. It
  answers "no leader" for ``leader_after_seconds`` after its start, as a
  restarted agent does until it rejoins, and to its first
  ``no_leader_answers`` questions however late they come (so a check that
  the caller waited does not depend on the machine's load), then ``leader``.
- A plugin (``nomad-device-nvidia``) answers nothing, like the real one run by hand.

Every call it answers is logged as one JSON line to syslog (the journal), tag
``<product>-stand-in``, with the wall-clock time, so a scenario can check what
was asked of which node and in which order: ``journalctl -t consul-stand-in -o cat``.
"""

import http.server
import json
import os
import signal
import socket
import ssl
import sys
import syslog
import time
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

# mirror/tasks/start.yml replaces this line for each archive.
STAND_IN = json.loads('{"name": "consul", "version": "0.0.0", "plugin": false}')
NAME: str = STAND_IN["name"]
# How the real agents say "no leader yet": a Consul server answers 200 with ""
# from its own raft state (agent/consul/status_endpoint.go); Nomad forwards
# Status.Leader to the leader and answers 500 with structs.ErrNoLeader's text
# while there is none (nomad/status_endpoint.go, nomad/structs/structs.go).
NOMAD_NO_LEADER = "No cluster leader"


def log(event: str, **fields: Any) -> None:
    """Write one event to the journal (tag <product>-stand-in)."""
    syslog.openlog(f"{NAME}-stand-in")
    syslog.syslog(json.dumps({"event": event, "time": time.time(), **fields}))


def refuse() -> int:
    print("stand-in binary: no agent", file=sys.stderr)
    return 1


def version() -> int:
    print(f"{NAME.capitalize()} v{STAND_IN['version']}")
    print("Revision 0000000000000000000000000000000000000000 (stand-in)")
    return 0


def validate(directory: str) -> int:
    files = sorted(p.name for p in Path(directory).glob("*.hcl"))
    log("validate", directory=directory, files=files)
    if not files:
        print(f"stand-in {NAME}: no *.hcl file in {directory}", file=sys.stderr)
        return 1
    print(f"stand-in {NAME}: found {', '.join(files)}; their syntax is NOT checked")
    return 0


def notify_systemd_ready() -> None:
    """sd_notify(READY=1): the units are Type=notify, as the real agents are."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", address)


def agent() -> int:
    settings_file = Path(f"/etc/{NAME}-stand-in.json")
    if not settings_file.exists():
        return refuse()
    settings = json.loads(settings_file.read_text())
    url = urlsplit(settings["url"])
    started = time.monotonic()
    no_leader_left = [int(settings.get("no_leader_answers", 0))]

    class LeaderOnly(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/v1/status/leader":
                self.send_error(404, "stand-in: only /v1/status/leader")
                return
            up_for = time.monotonic() - started
            waiting = up_for < settings["leader_after_seconds"] or no_leader_left[0] > 0
            leader = "" if waiting else settings["leader"]
            if waiting:
                no_leader_left[0] -= 1
            log("leader", answer=leader)
            if not leader and NAME == "nomad":
                status, body, kind = 500, NOMAD_NO_LEADER.encode(), "text/plain"
            else:
                status, body, kind = 200, json.dumps(leader).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the journal gets one event per answer from do_GET."""

    server = http.server.ThreadingHTTPServer((url.hostname or "", url.port or 0), LeaderOnly)
    if url.scheme == "https":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(settings["cert_file"], settings["key_file"])
        server.socket = context.wrap_socket(server.socket, server_side=True)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log("stop", pid=os.getpid(), signal=signal.Signals(signum).name)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log("start", pid=os.getpid(), url=settings["url"])
    notify_systemd_ready()
    server.serve_forever()
    return 0


def main(argv: list[str]) -> int:
    if STAND_IN["plugin"]:
        # Like the real go-plugin binary started by hand.
        print(
            "This binary is a plugin. These are not meant to be executed directly.\n"
            "Please execute the program that consumes these plugins, which will\n"
            "load any plugins automatically",
            file=sys.stderr,
        )
        return 1
    match argv:
        case ["version"]:
            return version()
        case ["validate", directory] if NAME == "consul":
            return validate(directory)
        case ["config", "validate", directory] if NAME == "nomad":
            return validate(directory)
        case ["agent", *_]:
            return agent()
        case _:
            return refuse()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
