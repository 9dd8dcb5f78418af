# Copyright: twin.cluster developers
# Apache License 2.0 (see galaxy.yml)
"""Filters of the prima_cpp role: turn user expert definitions into the expert jobs.

``prima_cpp_experts`` is the one place that knows what an expert is: the fields
a user may set in one entry of ``prima_cpp_experts`` (:data:`EXPERT_OPTIONS`:
types, what is required, each default), and everything its Nomad job needs,
computed from those fields, the inventory and the role's settings: the ranks
with their nodes, addresses and ports, each rank's program and argument list,
the Consul service meta. ``jobs/expert.nomad.hcl.j2`` only lays these values
out. ``meta/argument_specs.yml`` shows the same fields to ansible-doc and to
the role's argument check; tests/test_prima_cpp_filter.py holds it to
:data:`EXPERT_OPTIONS`.

Each expert runs one of two engines (``engine``): upstream llama.cpp's
``llama-server`` on one node (native tool calls with ``--jinja``, vision
models with ``--mmproj``), or a prima.cpp ring over several nodes.

``prima_cpp_node_needs`` answers, for one host, what the role must do there:
build prima.cpp (with HiGHS? with CUDA?), build upstream llama-server, and
which models to download. ``prima_cpp_port_clashes`` names the static ports
two ranks would both take on one node. The role validates the input first
(tasks/validate.yml); these filters only raise on input that validation lets
through by mistake.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean


@dataclass(frozen=True)
class Option:
    """One field of an entry of prima_cpp_experts.

    ``type``, ``elements``, ``choices`` and ``options`` mean what they mean in
    an argument spec. A field left out, null or empty (``""``, ``[]``, ``{}``)
    takes ``default``, or, with ``role_default``, the value of that role
    variable (handed to the filter in ``defaults`` under the field's name).
    Fields with neither are derived from other fields (see
    :func:`normalize_expert`) or stay null.
    """

    type: str
    elements: str | None = None
    required: bool = False
    default: Any = None
    role_default: str | None = None
    choices: tuple[Any, ...] = ()
    options: Mapping[str, Option] | None = None


LLAMA_CPP = "llama.cpp"
PRIMA_CPP = "prima.cpp"
# Consul refuses a service meta value longer than this.
META_VALUE_MAX = 512
# At most this many examples, published as meta example_1 ... example_<N>.
EXAMPLES_MAX = 16

# Every field a user may set in one entry of prima_cpp_experts.
EXPERT_OPTIONS: dict[str, Option] = {
    "name": Option("str", required=True),
    "domain": Option("str", required=True),
    "description": Option("str"),  # "<domain> expert"
    "examples": Option("list", elements="str", default=[]),
    "engine": Option("str", choices=(LLAMA_CPP, PRIMA_CPP)),  # prima.cpp for a ring, else llama.cpp
    "tool_calls": Option("bool"),  # true with llama.cpp, false with prima.cpp
    "namespace": Option("str", role_default="prima_cpp_namespace"),
    "datacenters": Option("list", elements="str", role_default="prima_cpp_datacenters"),
    "region": Option("str", role_default="prima_cpp_region"),
    "model_url": Option("str", required=True),
    "model_sha256": Option("str", required=True),
    "model_file": Option("str"),  # the last part of model_url's path
    "model_name": Option("str"),  # model_file without .gguf
    "mmproj_url": Option("str"),  # null: no multimodal projector
    "mmproj_sha256": Option("str"),
    "mmproj_file": Option("str"),  # the last part of mmproj_url's path
    "context": Option("int", role_default="prima_cpp_context"),
    "gpu_layers": Option("int", role_default="prima_cpp_gpu_layers"),
    "gpu": Option("bool", default=False),
    "gpu_count": Option("int", default=1),
    "nodes": Option("list", elements="str", required=True),
    "world": Option("int"),  # the number of nodes
    "layer_window": Option("list", elements="int"),
    "gpu_mem": Option("list", elements="float"),
    "data_port_base": Option("int", role_default="prima_cpp_data_port_base"),
    "signal_port_base": Option("int", role_default="prima_cpp_signal_port_base"),
    "http_port": Option("int"),  # null: a dynamic port
    "threads": Option("int"),  # null: the program's choice
    "prefetch": Option("bool", role_default="prima_cpp_prefetch"),
    "extra_args": Option("list", elements="str", default=[]),
    "resources": Option(
        "dict",
        role_default="prima_cpp_resources",
        options={"cpu": Option("int"), "memory": Option("int")},
    ),
    "api_key_variable": Option("str"),  # null: no API key
    "service_name": Option("str", role_default="prima_cpp_service_name"),
    "tags": Option("list", elements="str", default=[]),
    "healthy_deadline": Option("str", default="10m"),
    "progress_deadline": Option("str", default="15m"),
    "health_grace": Option("str", default="300s"),
}
EXPERT_FIELDS = frozenset(EXPERT_OPTIONS)
# The keys of the filter's ``defaults``: the fields whose default a role variable holds.
DEFAULTED_FIELDS = frozenset(k for k, o in EXPERT_OPTIONS.items() if o.role_default)
# The keys of the filter's ``settings``: how every expert job runs (the role
# variables prima_cpp_<key>: server_bin and worker_bin are prima.cpp's
# llama-server and worker, llama_server_bin is upstream llama.cpp's).
SETTINGS = frozenset(
    {
        "models_dir",
        "models_volume",
        "models_mount",
        "task_driver",
        "server_bin",
        "worker_bin",
        "llama_server_bin",
    }
)


def model_file_name(expert: Mapping[str, Any], kind: str = "model") -> str:
    """A file name: <kind>_file, else the last part of <kind>_url's path."""
    if expert.get(f"{kind}_file"):
        return str(expert[f"{kind}_file"])
    url = expert[f"{kind}_url"]
    name = posixpath.basename(unquote(urlparse(str(url)).path))
    if not name:
        raise AnsibleFilterError(
            f"expert {expert.get('name')}: {kind}_url {url} has no file name; set {kind}_file."
        )
    return name


def node_address(hostvars: Mapping[str, Any], node: str) -> str:
    """The address other ranks reach a node on.

    prima_cpp_address when set, else the default IPv4 address from facts, else
    ansible_host, else the inventory name itself.
    """
    host = hostvars[node]
    if host.get("prima_cpp_address"):
        return str(host["prima_cpp_address"])
    default_ipv4 = host.get("ansible_default_ipv4") or {}
    if isinstance(default_ipv4, Mapping) and default_ipv4.get("address"):
        return str(default_ipv4["address"])
    if host.get("ansible_host"):
        return str(host["ansible_host"])
    return node


def has_nvidia_gpu(hostvars: Mapping[str, Any], node: str) -> bool:
    """A host's vars say it has an NVIDIA GPU: prima_cpp_cuda, else nomad_nvidia_enable."""
    host = hostvars[node]
    flag = host.get("prima_cpp_cuda")
    if flag is None:
        flag = host.get("nomad_nvidia_enable", False)
    if isinstance(flag, str):
        return flag.strip().lower() in ("1", "true", "yes", "on")
    return bool(flag)


def prima_cpp_without_gpu(nodes: list[str], hostvars: Mapping[str, Any]) -> list[str]:
    """The nodes (each once, in order) whose host vars do not declare an NVIDIA GPU."""
    return [n for n in dict.fromkeys(str(n) for n in nodes) if not has_nvidia_gpu(hostvars, n)]


def _unset(value: Any) -> bool:
    """Left out in effect: null, or an empty string, list or mapping."""
    return value is None or (isinstance(value, (str, Sequence, Mapping)) and len(value) == 0)


_SCALARS: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": lambda value: boolean(value, strict=True),
}


def _convert(option: Option, value: Any, what: str) -> Any:
    """``value`` as ``option`` types it; null list elements stay null (a rank without one)."""
    try:
        if option.type == "list":
            if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
                raise TypeError(f"got {type(value).__name__}")
            element = Option(option.elements or "str")
            return [None if v is None else _convert(element, v, what) for v in value]
        return _SCALARS[option.type](value)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"{what} must be {option.type}: {exc}") from exc


def _resolve(entry: Mapping[str, Any], name: str, defaults: Mapping[str, Any], label: str) -> Any:
    """One field of an entry, its default filled in and converted to its type."""
    option = EXPERT_OPTIONS[name]
    value = entry.get(name)
    default = defaults[name] if option.role_default else option.default
    if option.options is not None:
        # A dict is merged over its default, key by key.
        given = {} if _unset(value) else value
        if not isinstance(given, Mapping):
            raise AnsibleFilterError(f"{label}: {name} must be a dict.")
        unknown = sorted(set(given) - set(option.options))
        if unknown:
            raise AnsibleFilterError(f"{label}: {name} has unknown keys {unknown}.")
        merged = {**(default or {}), **{k: v for k, v in given.items() if not _unset(v)}}
        return {
            key: _convert(sub, merged.get(key), f"{label}: {name}.{key}")
            for key, sub in option.options.items()
        }
    if _unset(value):
        value = default
    return None if value is None else _convert(option, value, f"{label}: {name}")


def _check_keys(given: Mapping[str, Any], wanted: frozenset[str], what: str) -> None:
    missing, unknown = sorted(wanted - set(given)), sorted(set(given) - wanted)
    if missing or unknown:
        raise AnsibleFilterError(
            f"prima_cpp_experts: {what} must have exactly the keys {sorted(wanted)} "
            f"(missing {missing}, unknown {unknown})."
        )


def _per_rank(name: str, key: str, values: list[Any] | None, world: int) -> list[Any]:
    if values is None:
        return [None] * world
    if len(values) != world:
        raise AnsibleFilterError(f"expert {name}: {key} must list one value per rank ({world}).")
    return values


def normalize_expert(
    entry: Mapping[str, Any],
    hostvars: Mapping[str, Any],
    defaults: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """One entry of prima_cpp_experts -> the expert: every field set, one dict per rank."""
    label = f"expert {entry.get('name')}"
    unknown = sorted(set(entry) - EXPERT_FIELDS)
    if unknown:
        raise AnsibleFilterError(f"{label}: unknown fields {unknown}.")
    missing = [k for k, o in EXPERT_OPTIONS.items() if o.required and _unset(entry.get(k))]
    if missing:
        raise AnsibleFilterError(f"{label}: missing required fields {missing}.")
    field = {name: _resolve(entry, name, defaults, label) for name in EXPERT_OPTIONS}
    name, domain, nodes = field["name"], field["domain"], field["nodes"]
    world = len(nodes) if field["world"] is None else field["world"]
    if world != len(nodes):
        raise AnsibleFilterError(f"expert {name}: world {world} but {len(nodes)} nodes listed.")
    if world < 1:
        raise AnsibleFilterError(
            f"expert {name}: world {world}; an expert needs at least one rank."
        )
    engine = field["engine"] or (PRIMA_CPP if world > 1 else LLAMA_CPP)
    _check_engine(name, engine, world, field)
    examples = _examples(name, field["examples"])
    layer_window = _per_rank(name, "layer_window", field["layer_window"], world)
    gpu_mem = _per_rank(name, "gpu_mem", field["gpu_mem"], world)
    ranks = [
        {
            "rank": rank,
            "node": node,
            "address": node_address(hostvars, node),
            "data_port": field["data_port_base"] + rank,
            "signal_port": field["signal_port_base"] + rank,
            "layer_window": layer_window[rank],
            "gpu_mem": gpu_mem[rank],
        }
        for rank, node in enumerate(nodes)
    ]
    file_name = model_file_name(field)
    mmproj_file = model_file_name(field, "mmproj") if field["mmproj_url"] else None
    tags = ["expert", domain]
    tags += [t for t in field["tags"] if t not in tags]
    description = field["description"] or f"{domain} expert"
    if len(description) > META_VALUE_MAX:
        raise AnsibleFilterError(
            f"expert {name}: description has {len(description)} characters; Consul meta "
            f"values hold at most {META_VALUE_MAX}."
        )
    return {
        "name": name,
        "domain": domain,
        "description": description,
        "examples": examples,
        "engine": engine,
        "tool_calls": engine == LLAMA_CPP if field["tool_calls"] is None else field["tool_calls"],
        "namespace": field["namespace"],
        "datacenters": field["datacenters"],
        "region": field["region"],
        "model_url": field["model_url"],
        "model_sha256": field["model_sha256"].lower(),
        "model_file": file_name,
        "model_path": posixpath.join(str(settings["models_dir"]), file_name),
        "model_name": field["model_name"] or file_name.removesuffix(".gguf"),
        "mmproj_url": field["mmproj_url"],
        "mmproj_sha256": (field["mmproj_sha256"] or "").lower() or None,
        "mmproj_file": mmproj_file,
        "mmproj_path": (
            None
            if mmproj_file is None
            else posixpath.join(str(settings["models_dir"]), mmproj_file)
        ),
        "context": field["context"],
        "gpu_layers": field["gpu_layers"],
        "gpu": field["gpu"],
        "gpu_count": field["gpu_count"],
        "world": world,
        "ranks": ranks,
        "http_port": field["http_port"],
        "threads": field["threads"],
        "prefetch": field["prefetch"],
        "extra_args": field["extra_args"],
        "resources": field["resources"],
        "api_key_variable": field["api_key_variable"],
        "service_name": field["service_name"],
        "tags": tags,
        "healthy_deadline": field["healthy_deadline"],
        "progress_deadline": field["progress_deadline"],
        "health_grace": field["health_grace"],
    }


def _check_engine(name: str, engine: str, world: int, field: Mapping[str, Any]) -> None:
    """What one engine cannot do: llama.cpp has no ring, prima.cpp no tools or projector."""
    if engine not in (LLAMA_CPP, PRIMA_CPP):
        raise AnsibleFilterError(
            f"expert {name}: engine {engine} is not one of {LLAMA_CPP}, {PRIMA_CPP}."
        )
    if engine == LLAMA_CPP and world > 1:
        raise AnsibleFilterError(
            f"expert {name}: engine {LLAMA_CPP} runs on one node, but {world} ranks are listed; "
            f"list one node or set engine {PRIMA_CPP}."
        )
    if engine == PRIMA_CPP and field["tool_calls"]:
        raise AnsibleFilterError(
            f"expert {name}: tool_calls true with engine {PRIMA_CPP}, whose llama-server "
            f"rejects native tool calls; set engine {LLAMA_CPP} or tool_calls false."
        )
    if engine == PRIMA_CPP and field["mmproj_url"]:
        raise AnsibleFilterError(
            f"expert {name}: mmproj_url with engine {PRIMA_CPP}, which serves no "
            f"multimodal projector; set engine {LLAMA_CPP}."
        )
    if bool(field["mmproj_url"]) != bool(field["mmproj_sha256"]):
        raise AnsibleFilterError(f"expert {name}: mmproj_url and mmproj_sha256 go together.")


def _examples(name: str, examples: list[str | None]) -> list[str]:
    """The example utterances, each one Consul meta value (example_1 ... example_N)."""
    if len(examples) > EXAMPLES_MAX:
        raise AnsibleFilterError(
            f"expert {name}: {len(examples)} examples; at most {EXAMPLES_MAX} fit its Consul meta."
        )
    out = []
    for number, example in enumerate(examples, start=1):
        text = (example or "").strip()
        if not text or len(text) > META_VALUE_MAX:
            raise AnsibleFilterError(
                f"expert {name}: example {number} has {len(text)} characters; each example "
                f"needs 1 to {META_VALUE_MAX} (one Consul meta value)."
            )
        out.append(text)
    return out


def _llama_cpp_args(expert: Mapping[str, Any], model: str, mmproj: str | None) -> list[list[str]]:
    """Upstream llama-server on one node: the API, native tool calls, the projector if any."""
    args = [["-m", model], ["-c", str(expert["context"])], ["-ngl", str(expert["gpu_layers"])]]
    if expert["threads"] is not None:
        args.append(["-t", str(expert["threads"])])
    args += [
        ["--host", "0.0.0.0", "--port", "${NOMAD_PORT_http}"],
        ["--metrics"],
        ["--alias", str(expert["model_name"])],
        # The model's own chat template, which parses its tool calls (the default of
        # the pinned llama.cpp; explicit for builds from older archives).
        ["--jinja"],
    ]
    if mmproj is not None:
        args.append(["--mmproj", mmproj])
    if expert["extra_args"]:
        args.append([str(a) for a in expert["extra_args"]])
    return args


def _rank_args(expert: Mapping[str, Any], position: int, model: str) -> list[list[str]]:
    """The argument list of one rank: one flag with its values per entry (a line in the job).

    Every rank: the model, context, GPU layers, threads; in a ring also its
    place (world, rank, rank 0 as master, the next rank, closing on rank 0),
    the base ports (prima.cpp listens on base + rank), prefetch and its VRAM
    cap. Rank 0 also serves the API: address and port, metrics, the model's
    alias, the layer windows when every rank has one, and extra_args.
    """
    ranks = expert["ranks"]
    rank = ranks[position]
    world = int(expert["world"])
    ring = world > 1
    args = [["-m", model], ["-c", str(expert["context"])], ["-ngl", str(expert["gpu_layers"])]]
    if expert["threads"] is not None:
        args.append(["-t", str(expert["threads"])])
    if ring:
        following = ranks[(position + 1) % world]
        args += [
            ["--world", str(world), "--rank", str(rank["rank"])],
            ["--master", str(ranks[0]["address"]), "--next", str(following["address"])],
            [
                "--data-port",
                str(ranks[0]["data_port"]),
                "--signal-port",
                str(ranks[0]["signal_port"]),
            ],
        ]
        if expert["prefetch"]:
            args.append(["--prefetch"])
        if rank["gpu_mem"] is not None:
            # prima.cpp takes whole GiB.
            args.append(["--gpu-mem", str(int(float(rank["gpu_mem"])))])
    if rank["rank"] == 0:
        args += [
            ["--host", "0.0.0.0", "--port", "${NOMAD_PORT_http}"],
            ["--metrics"],
            ["--alias", str(expert["model_name"])],
        ]
        windows = [r["layer_window"] for r in ranks]
        if ring and None not in windows:
            args.append(["-lw", ",".join(str(w) for w in windows)])
        if expert["extra_args"]:
            args.append([str(a) for a in expert["extra_args"]])
    return args


def with_job_values(expert: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """A normalized expert plus what its Nomad job lays out.

    The task driver, the models volume and where the task mounts it (null
    with raw_exec, which reads model_path on the host), the Consul service
    meta (strings), and per rank its task (server on rank 0, worker on the
    others), the program and its argument list.
    """
    exec_driver = settings["task_driver"] == "exec"
    mount = str(settings["models_mount"]) if exec_driver else None

    def in_task(file: str, path: str) -> str:
        return f"{mount}/{file}" if mount is not None else path

    model = in_task(expert["model_file"], expert["model_path"])
    ranks = []
    if expert["engine"] == LLAMA_CPP:
        mmproj = expert["mmproj_file"] and in_task(expert["mmproj_file"], expert["mmproj_path"])
        ranks.append(
            {
                **expert["ranks"][0],
                "task": "server",
                "command": str(settings["llama_server_bin"]),
                "args": _llama_cpp_args(expert, model, mmproj),
            }
        )
    for position, rank in enumerate(expert["ranks"][len(ranks) :], start=len(ranks)):
        server = rank["rank"] == 0
        ranks.append(
            {
                **rank,
                "task": "server" if server else "worker",
                "command": str(settings["server_bin"] if server else settings["worker_bin"]),
                "args": _rank_args(expert, position, model),
            }
        )
    return {
        **expert,
        "task_driver": str(settings["task_driver"]),
        "models_volume": str(settings["models_volume"]),
        "models_mount": mount,
        "service_meta": {
            "expert": str(expert["name"]),
            "domain": str(expert["domain"]),
            "description": str(expert["description"]),
            "model": str(expert["model_name"]),
            "context_length": str(expert["context"]),
            "engine": str(expert["engine"]),
            "tool_calls": "true" if expert["tool_calls"] else "false",
            "world": str(expert["world"]),
            **{f"example_{n}": str(e) for n, e in enumerate(expert["examples"], start=1)},
        },
        "ranks": ranks,
    }


def prima_cpp_experts(
    experts: list[Mapping[str, Any]] | None,
    hostvars: Mapping[str, Any],
    defaults: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """All entries of prima_cpp_experts -> the experts their jobs render, in the same order."""
    _check_keys(defaults, DEFAULTED_FIELDS, "defaults")
    _check_keys(settings, SETTINGS, "settings")
    return [
        with_job_values(normalize_expert(e, hostvars, defaults, settings), settings)
        for e in experts or []
    ]


def needs_highs(expert: Mapping[str, Any]) -> bool:
    """Rank 0 of a ring needs HiGHS unless every rank's layer window is given."""
    if expert["world"] < 2:
        return False
    return any(r["layer_window"] is None for r in expert["ranks"])


def _files(expert: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The files an expert's nodes download: the model, and its projector if any."""
    files = [(expert["model_path"], expert["model_url"], expert["model_sha256"])]
    if expert.get("mmproj_url"):
        files.append((expert["mmproj_path"], expert["mmproj_url"], expert["mmproj_sha256"]))
    return [
        {"expert": expert["name"], "url": url, "sha256": sha256, "path": path}
        for path, url, sha256 in files
    ]


def prima_cpp_node_needs(experts: list[Mapping[str, Any]], node: str) -> dict[str, Any]:
    """What one host needs: which builds (prima.cpp with HiGHS or not, llama.cpp), which models."""
    models: dict[str, dict[str, Any]] = {}
    prima = llama = highs = False
    for expert in experts:
        mine = [r for r in expert["ranks"] if r["node"] == node]
        if not mine:
            continue
        if expert["engine"] == LLAMA_CPP:
            llama = True
        else:
            prima = True
            highs = highs or (any(r["rank"] == 0 for r in mine) and needs_highs(expert))
        for file in _files(expert):
            path = file["path"]
            if path in models and models[path]["sha256"] != file["sha256"]:
                raise AnsibleFilterError(
                    f"experts {models[path]['expert']} and {expert['name']} both use {path} "
                    "with different checksums; give one of them another file name."
                )
            models.setdefault(path, file)
    return {"prima_cpp": prima, "llama_cpp": llama, "highs": highs, "models": list(models.values())}


def prima_cpp_port_clashes(experts: list[Mapping[str, Any]]) -> list[str]:
    """One message per static port that two ranks would take on the same node.

    Static ports: the data and signal ports of every ring rank, and rank 0's
    ``http_port`` when set. Nomad would leave the second job pending with no
    reason given, so the role refuses both experts up front.
    """
    taken: dict[tuple[str, int], str] = {}
    clashes = []
    for expert in experts:
        ring = expert["world"] > 1
        for rank in expert["ranks"]:
            claims = []
            if ring:
                claims += [("data", rank["data_port"]), ("signal", rank["signal_port"])]
            if rank["rank"] == 0 and expert["http_port"] is not None:
                claims.append(("http", expert["http_port"]))
            for kind, port in claims:
                what = f"expert {expert['name']} (rank {rank['rank']}, {kind} port)"
                key = (str(rank["node"]), int(port))
                if key in taken:
                    clashes.append(
                        f"{taken[key]} and {what} both take port {port} on node {rank['node']}"
                    )
                else:
                    taken[key] = what
    return clashes


class FilterModule:
    """prima_cpp role filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "prima_cpp_experts": prima_cpp_experts,
            "prima_cpp_node_needs": prima_cpp_node_needs,
            "prima_cpp_port_clashes": prima_cpp_port_clashes,
            "prima_cpp_without_gpu": prima_cpp_without_gpu,
        }
