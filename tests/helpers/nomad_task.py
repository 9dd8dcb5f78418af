"""Run one task of a rendered Nomad job on this machine, the way a Nomad client starts it.

No Nomad agent runs here, so the tests of every job template take what the
job would run (command, args, env) from the rendered file and start it
themselves, with the runtime values a Nomad client would supply:

- ports: ``NOMAD_PORT_<label>``, ``NOMAD_HOST_PORT_<label>``,
  ``NOMAD_IP_<label>``, ``NOMAD_ADDR_<label>`` (static ports as written,
  dynamic ones picked free, or given by the caller);
- directories: ``NOMAD_ALLOC_DIR``, ``NOMAD_TASK_DIR``, ``NOMAD_SECRETS_DIR``
  (a fresh allocation directory laid out like Nomad's: ``alloc/``,
  ``<task>/local``, ``<task>/secrets``);
- meta: ``NOMAD_META_<key>`` (and upper-cased) from the job's, group's and
  task's ``meta`` blocks, with a dispatch's meta on top (a parameterized
  job's ``nomad job dispatch -meta key=value``);
- ``NOMAD_JOB_NAME``, ``NOMAD_JOB_ID``, ``NOMAD_GROUP_NAME``,
  ``NOMAD_TASK_NAME``, ``NOMAD_ALLOC_ID``, ``NOMAD_NAMESPACE``,
  ``NOMAD_REGION``, ``NOMAD_DC``, ``node.unique.name``;
- host volumes: a ``volume_mount`` destination is mapped to the real
  directory the caller names for that host volume;
- ``template`` blocks with ``env = true``: their variables must be given by
  the caller (they come from Consul/Nomad Variables, which do not run here);
  other templates must be rendered by the caller into the task directories.

``${...}`` in ``config`` and ``env`` is interpolated as Nomad does; a name
Nomad would know but this helper does not fails loudly instead of passing
through. The task is started as a subprocess (optionally inside a network
namespace), its Consul HTTP check is polled until it passes, and it is
stopped with the job's ``kill_signal`` then SIGKILL after ``kill_timeout``.

Usage::

    spec = TaskSpec.from_job(parse_job(text), "rank-0", "server")
    with LocalTask(spec, host_volumes={"models": model_dir}) as task:
        task.wait_healthy(timeout=120)
        httpx.get(task.url("http") + "/v1/models")
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from helpers.jobs import Block, Job
from helpers.ports import free_port

T = TypeVar("T")

_INTERPOLATION = re.compile(r"(\$)?\$\{([^}]+)\}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | int | float) -> float:
    """Nomad duration ("30s", "1m30s", "250ms") -> seconds."""
    if isinstance(value, int | float):
        return float(value) / 1e9  # bare numbers in job files are nanoseconds
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a Nomad duration: {value!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


@dataclass(frozen=True)
class Check:
    """A Consul/Nomad service check of the task's group or of the task."""

    service: str
    name: str
    type: str
    port: str
    path: str = "/"
    timeout: float = 2.0


@dataclass(frozen=True)
class Mount:
    """A ``volume_mount``: the group volume's host volume source and the path in the task."""

    volume: str
    source: str
    destination: str


@dataclass(frozen=True)
class TaskSpec:
    """What one task of a parsed job runs, before Nomad's runtime values are known."""

    job_id: str
    namespace: str
    region: str
    datacenter: str
    group: str
    name: str
    driver: str
    command: str
    args: tuple[str, ...]
    env: Mapping[str, str]
    ports: Mapping[str, int | None]
    mounts: tuple[Mount, ...]
    checks: tuple[Check, ...]
    env_templates: tuple[str, ...]
    meta: Mapping[str, str] = field(default_factory=dict)
    #: A parameterized job's dispatch meta keys: (required, optional); None otherwise.
    dispatch_keys: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    kill_signal: str = "SIGINT"
    kill_timeout: float = 5.0

    @classmethod
    def from_job(cls, job: Job, group: str, task: str) -> TaskSpec:
        """The task ``task`` of group ``group`` of a parsed job file."""
        grp = job.group(group)
        body = grp.labelled("task")[task]
        config = body.block("config")
        env_blocks = body.blocks("env")
        env = {k: str(v) for b in env_blocks for k, v in b.body.items()}
        ports: dict[str, int | None] = {}
        for network in grp.blocks("network"):
            for label, port in network.labelled("port").items():
                static = port.get("static")
                ports[label] = None if static is None else int(static)
        volumes = {name: str(v["source"]) for name, v in grp.labelled("volume").items()}
        mounts = tuple(
            Mount(str(m["volume"]), volumes[str(m["volume"])], str(m["destination"]))
            for m in body.blocks("volume_mount")
        )
        checks = tuple(_checks(grp) + _checks(body))
        env_templates = tuple(
            str(t["data"]) for t in body.blocks("template") if bool(t.get("env", False))
        )
        datacenters = job.get("datacenters") or ["dc1"]
        meta = {
            k: str(v) for b in (job, grp, body) for m in b.blocks("meta") for k, v in m.body.items()
        }
        dispatch_keys = None
        for p in job.blocks("parameterized"):
            dispatch_keys = (
                tuple(p.get("meta_required", [])),
                tuple(p.get("meta_optional", [])),
            )
        return cls(
            job_id=job.id,
            namespace=str(job.get("namespace", "default")),
            region=str(job.get("region", "global")),
            datacenter=str(datacenters[0]),
            group=group,
            name=task,
            driver=str(body["driver"]),
            command=str(config["command"]),
            args=tuple(str(a) for a in config.get("args", [])),
            env=env,
            ports=ports,
            mounts=mounts,
            checks=checks,
            env_templates=env_templates,
            meta=meta,
            dispatch_keys=dispatch_keys,
            kill_signal=str(body.get("kill_signal", "SIGINT")),
            kill_timeout=parse_duration(body.get("kill_timeout", "5s")),
        )


def _checks(block: Block) -> list[Check]:
    out = []
    for service in block.blocks("service"):
        for check in service.blocks("check"):
            out.append(
                Check(
                    service=str(service.get("name", "")),
                    name=str(check.get("name", "")),
                    type=str(check["type"]),
                    port=str(check.get("port", service.get("port", ""))),
                    path=str(check.get("path", "/")),
                    timeout=parse_duration(check.get("timeout", "2s")),
                )
            )
    return out


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Replace ``${name}`` as Nomad does; ``$${x}`` stays a literal ``${x}``.

    Names Nomad knows at run time (``NOMAD_*``, ``node.*``, ``attr.*``,
    ``meta.*``, ``env["X"]``) must be in ``variables``; a missing one raises
    ``KeyError`` so a template mistake cannot pass unnoticed.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "${" + match.group(2) + "}"
        name = match.group(2).strip()
        env_ref = re.fullmatch(r'env\["([^"]+)"\]', name)
        if env_ref:
            name = env_ref.group(1)
        if name not in variables:
            raise KeyError(f"${{{name}}} is not known to this task (known: {sorted(variables)})")
        return variables[name]

    return _INTERPOLATION.sub(replace, value)


def _setns(netns: str) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    with open(f"/var/run/netns/{netns}", "rb") as fd:
        if libc.setns(fd.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Call ``fn`` with its sockets in network namespace ``netns`` (None: here).

    The namespace is entered by a fresh thread (namespaces are per thread),
    so the caller's own thread never leaves the host's namespace.
    """
    if netns is None:
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            _setns(netns)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


@dataclass
class LocalTask:
    """One task of a rendered job, started here as Nomad would start it.

    Args:
        spec: The task, from :meth:`TaskSpec.from_job`.
        host_volumes: Host volume name -> real directory (for ``volume_mount``).
        ip: Address the task's ports are on (``NOMAD_IP_<label>``).
        node_name: ``${node.unique.name}``.
        node_meta: The client's node meta (``${meta.<key>}``).
        dispatch_meta: A dispatch's meta, over the job's (``NOMAD_META_<key>``);
            a key the job does not declare in ``parameterized`` fails, as Nomad
            refuses the dispatch.
        ports: Label -> port for dynamic ports (default: a free port each).
        template_env: Values of the variables the task's ``env = true``
            templates would write (API keys from Nomad Variables...).
        netns: Network namespace (``ip netns``) to run the task and its
            checks in; None runs it in this one.
        alloc_dir: Parent for the allocation directory (default: a temp dir,
            removed on stop).
    """

    spec: TaskSpec
    host_volumes: Mapping[str, Path | str] = field(default_factory=dict)
    ip: str = "127.0.0.1"
    node_name: str = "local"
    node_meta: Mapping[str, str] = field(default_factory=dict)
    dispatch_meta: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)
    template_env: Mapping[str, str] = field(default_factory=dict)
    netns: str | None = None
    alloc_dir: Path | None = None

    argv: list[str] = field(init=False, default_factory=list)
    env: dict[str, str] = field(init=False, default_factory=dict)
    port_values: dict[str, int] = field(init=False, default_factory=dict)
    log_path: Path | None = field(init=False, default=None)
    _process: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _own_alloc: bool = field(init=False, default=False)
    _log: Any = field(init=False, default=None)

    def prepare(self) -> None:
        """Work out ports, directories, env and the argv without starting anything."""
        spec = self.spec
        for label, static in spec.ports.items():
            if static is None:
                static = self.ports.get(label) or free_port()
            self.port_values[label] = static
        if self.alloc_dir is None:
            self.alloc_dir = Path(tempfile.mkdtemp(prefix=f"alloc-{spec.job_id}-"))
            self._own_alloc = True
        alloc = self.alloc_dir
        task_dir = alloc / spec.name
        subdirs = ("alloc/data", "alloc/logs", f"{spec.name}/local", f"{spec.name}/secrets")
        for sub in subdirs:
            (alloc / sub).mkdir(parents=True, exist_ok=True)
        alloc_id = str(uuid.uuid4())
        runtime: dict[str, str] = {
            "NOMAD_ALLOC_DIR": str(alloc / "alloc"),
            "NOMAD_TASK_DIR": str(task_dir / "local"),
            "NOMAD_SECRETS_DIR": str(task_dir / "secrets"),
            "NOMAD_ALLOC_ID": alloc_id,
            "NOMAD_SHORT_ALLOC_ID": alloc_id[:8],
            "NOMAD_ALLOC_NAME": f"{spec.job_id}.{spec.group}[0]",
            "NOMAD_ALLOC_INDEX": "0",
            "NOMAD_JOB_NAME": spec.job_id,
            "NOMAD_JOB_ID": spec.job_id,
            "NOMAD_GROUP_NAME": spec.group,
            "NOMAD_TASK_NAME": spec.name,
            "NOMAD_NAMESPACE": spec.namespace,
            "NOMAD_REGION": spec.region,
            "NOMAD_DC": spec.datacenter,
            "node.unique.name": self.node_name,
            **{f"meta.{key}": value for key, value in self.node_meta.items()},
            "node.datacenter": spec.datacenter,
            "node.region": spec.region,
        }
        if self.dispatch_meta or spec.dispatch_keys:
            required, optional = spec.dispatch_keys or ((), ())
            unknown = sorted(set(self.dispatch_meta) - set(required) - set(optional))
            missing = sorted(set(required) - set(self.dispatch_meta))
            if spec.dispatch_keys is None or unknown or missing:
                raise ValueError(
                    f"nomad job dispatch of {spec.job_id} would be refused: "
                    f"not parameterized={spec.dispatch_keys is None}, unknown meta {unknown}, "
                    f"missing meta {missing}"
                )
        for key, value in {**spec.meta, **self.dispatch_meta}.items():
            runtime[f"NOMAD_META_{key}"] = value
            runtime[f"NOMAD_META_{key.upper()}"] = value
        for label, port in self.port_values.items():
            runtime[f"NOMAD_PORT_{label}"] = str(port)
            runtime[f"NOMAD_HOST_PORT_{label}"] = str(port)
            runtime[f"NOMAD_IP_{label}"] = self.ip
            runtime[f"NOMAD_ADDR_{label}"] = f"{self.ip}:{port}"
            runtime[f"NOMAD_HOST_IP_{label}"] = self.ip
            runtime[f"NOMAD_HOST_ADDR_{label}"] = f"{self.ip}:{port}"
        template_env = self._template_env()
        # Nomad: runtime values, then the env block (interpolated), then
        # template env; the task's env is what interpolation sees.
        env = dict(runtime)
        env.update({k: interpolate(v, runtime) for k, v in spec.env.items()})
        env.update(template_env)
        self.env = {k: v for k, v in env.items() if "." not in k}
        self.env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        self.env["HOME"] = str(task_dir / "local")
        command = self._map_mounts(interpolate(spec.command, env))
        self.argv = [command] + [self._map_mounts(interpolate(a, env)) for a in spec.args]
        self.log_path = alloc / "alloc" / "logs" / f"{spec.name}.log"

    def _template_env(self) -> dict[str, str]:
        wanted: set[str] = set()
        for data in self.spec.env_templates:
            wanted |= set(re.findall(r"^\s*(?:\{\{.*?\}\})?([A-Za-z_][A-Za-z0-9_]*)=", data, re.M))
        missing = sorted(wanted - set(self.template_env))
        if missing:
            raise KeyError(
                f"task {self.spec.name!r} reads {missing} from a template with env = true; "
                "pass their values in template_env"
            )
        return dict(self.template_env)

    def _map_mounts(self, value: str) -> str:
        for mount in sorted(self.spec.mounts, key=lambda m: len(m.destination), reverse=True):
            dest = mount.destination.rstrip("/")
            if value == dest or value.startswith(dest + "/"):
                if mount.source not in self.host_volumes:
                    raise KeyError(
                        f"task mounts host volume {mount.source!r} at {dest}; "
                        "pass its directory in host_volumes"
                    )
                return str(Path(self.host_volumes[mount.source])) + value[len(dest) :]
        return value

    def start(self) -> None:
        """Start the task (after :meth:`prepare`, which it calls if needed)."""
        if not self.argv:
            self.prepare()
        assert self.log_path is not None
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            prefix + self.argv,
            env=self.env,
            cwd=self.env["NOMAD_TASK_DIR"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        """Everything the task wrote to stdout and stderr so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def port(self, label: str) -> int:
        return self.port_values[label]

    def url(self, label: str, host: str | None = None) -> str:
        """``http://<ip>:<port>`` of a port label (what Consul would advertise)."""
        return f"http://{host or self.ip}:{self.port_values[label]}"

    def check_once(self, check: Check) -> tuple[bool, str]:
        """Run one HTTP/TCP check as Consul would; (passing, detail)."""
        host = "127.0.0.1" if self.ip == "0.0.0.0" else self.ip
        port = self.port_values[check.port]

        def probe() -> tuple[bool, str]:
            if check.type == "tcp":
                try:
                    with socket.create_connection((host, port), timeout=check.timeout):
                        return True, "connected"
                except OSError as exc:
                    return False, str(exc)
            url = f"http://{host}:{port}{check.path}"
            try:
                with urllib.request.urlopen(url, timeout=check.timeout) as resp:
                    return 200 <= resp.status < 300, f"{url} -> {resp.status}"
            except urllib.error.HTTPError as exc:
                return False, f"{url} -> {exc.code}"
            except OSError as exc:
                return False, f"{url} -> {exc}"

        return in_netns(self.netns, probe)

    def wait_healthy(self, timeout: float = 120.0, interval: float = 0.5) -> None:
        """Poll every check of the task until all pass; fail early if the task exits."""
        checks = [c for c in self.spec.checks if c.type in {"http", "tcp"}]
        if not checks:
            raise ValueError(f"task {self.spec.name!r} has no HTTP or TCP check to wait for")
        deadline = time.monotonic() + timeout
        details: list[str] = []
        while time.monotonic() < deadline:
            if not self.running():
                code = self._process.returncode if self._process else None
                raise RuntimeError(
                    f"task {self.spec.name!r} exited ({code}) before its checks passed; "
                    f"log:\n{self.log()[-4000:]}"
                )
            results = [self.check_once(c) for c in checks]
            details = [d for _, d in results]
            if all(ok for ok, _ in results):
                return
            time.sleep(interval)
        raise TimeoutError(f"checks of {self.spec.name!r} not passing after {timeout}s: {details}")

    def wait(self, timeout: float) -> int:
        """Wait for a task that ends on its own (a batch job's); its exit code.

        Raises:
            TimeoutError: Still running after ``timeout`` seconds (then stopped).
        """
        assert self._process is not None, "not started"
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            log = self.log()[-4000:]
            raise TimeoutError(
                f"task {self.spec.name!r} still running after {timeout}s; log:\n{log}"
            ) from None

    def stop(self) -> int | None:
        """Send ``kill_signal``, wait ``kill_timeout``, then SIGKILL; the exit code."""
        proc = self._process
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                sig = getattr(signal, self.spec.kill_signal)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=self.spec.kill_timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            code = proc.returncode
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def cleanup(self) -> None:
        """Stop, and remove the allocation directory if this object made it."""
        self.stop()
        if self._own_alloc and self.alloc_dir is not None:
            shutil.rmtree(self.alloc_dir, ignore_errors=True)

    def __enter__(self) -> LocalTask:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def tasks_of(job: Job) -> Sequence[tuple[str, str]]:
    """``(group, task)`` of every task in a job, in file order."""
    return [(g, t) for g, t, _ in job.tasks()]
