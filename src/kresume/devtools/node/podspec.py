"""Pure pod-spec rules of the local node agent: env resolution, ``$(VAR)`` expansion, command, mounts.

Everything here is a function of the pod dict (as the API server returns it, camelCase keys) plus
lookups for Secrets and ConfigMaps, so it is unit-tested without a cluster. The rules are the
kubelet's, from the Kubernetes docs "Define Environment Variables for a Container", "Expose Pod
Information to Containers Through Environment Variables" and the core/v1 ``EnvVar`` reference:

- ``envFrom`` sources come first, in order (``prefix`` prepended; keys that are not valid env names are
  skipped); then ``env`` in order; a later definition of a name wins.
- ``$(VAR)`` in an ``env`` value expands to a variable defined *before* it (envFrom or earlier env);
  ``$$`` is an escaped ``$``; a reference to an unknown name stays as written.
- ``command``/``args`` expand ``$(VAR)`` against the container's final environment. The image's
  entrypoint is unknown here (images are ignored), so a container needs ``command``.
"""

from __future__ import annotations

import base64
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

Lookup = Callable[[str, str], "Mapping[str, str] | None"]
"""``(namespace, name) -> data`` of a Secret (already base64-decoded) or ConfigMap; None when absent."""

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class ContainerConfigError(ValueError):
    """The container cannot be configured (kubelet's ``CreateContainerConfigError``): a missing
    Secret/ConfigMap/key that is not optional, an unsupported fieldPath, no ``command``."""

    reason = "CreateContainerConfigError"
    """The ``state.terminated.reason`` reported for the container."""


class ContainerStartError(ContainerConfigError):
    """The container's command cannot be run: its executable is not found (kubelet reports ``StartError``
    with exit code 128 and the runtime's ``exec: "NAME": executable file not found in $PATH``)."""

    reason = "StartError"


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(NAME)`` from ``env`` and ``$$`` to ``$``; unknown references stay unchanged."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REF.sub(sub, text)


def decode_secret(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret object's ``data`` (base64) and ``stringData`` as plain strings (undecodable bytes replaced)."""
    out = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()}
    out.update(secret.get("stringData") or {})
    return out


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """Value of a downward-API ``fieldRef.fieldPath`` for env (the paths the docs list for env).

    Raises ContainerConfigError for a path kubelet does not support in env.
    """
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"), "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
        "status.podIPs": ",".join(i.get("ip", "") for i in status.get("podIPs") or []) or status.get("podIP"),
        "status.hostIPs": status.get("hostIP"),
    }  # fmt: skip
    if path in simple:
        return str(simple[path] or "")
    m = _FIELD_KEY.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise ContainerConfigError(f"env fieldRef.fieldPath {path!r} is not supported (see the downward API docs)")


def resource_value(container: Mapping[str, Any], ref: Mapping[str, Any], node_capacity: Mapping[str, str]) -> str:
    """``resourceFieldRef`` value: the container's limit (else the node's capacity), divided by ``divisor``.

    CPU is rounded up to whole cores (kubelet's default divisor "1"); memory is in bytes. Only plain
    quantities with the suffixes m, Ki, Mi, Gi, K, M, G are understood (enough for a dev node).
    """
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(name) or node_capacity.get(name, "0")
    divisor = parse_quantity(str(ref.get("divisor") or "1"))
    amount = parse_quantity(str(value)) / (divisor or 1)
    return str(int(-(-amount // 1)))


_SUFFIX = {"m": 1e-3, "": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
           "Ti": 2**40}  # fmt: skip


def parse_quantity(text: str) -> float:
    """A Kubernetes quantity (``500m``, ``2Gi``, ``1.5``) as a float; raises ContainerConfigError otherwise."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", text.strip())
    if not m or m.group(2) not in _SUFFIX:
        raise ContainerConfigError(f"quantity {text!r} is not understood by the dev node")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def resolve_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    secrets: Lookup,
    configmaps: Lookup,
    node_capacity: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment exactly as kubelet builds it from ``envFrom`` and ``env``.

    Returns only the pod-defined variables (the caller adds its base such as PATH first).
    Raises ContainerConfigError naming the env entry when a required source is missing.
    """
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    out: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        for kind, lookup in (("secretRef", secrets), ("configMapRef", configmaps)):
            ref = source.get(kind)
            if not ref:
                continue
            data = lookup(ns, ref.get("name", ""))
            if data is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f"envFrom {kind} {ns}/{ref.get('name')}: not found")
            for key, value in data.items():
                if _ENV_NAME.match(prefix + key):
                    out[prefix + key] = value
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var or var.get("valueFrom") is None:
            out[name] = expand(var.get("value") or "", out)
            continue
        value = _value_from(pod, container, var["valueFrom"], ns, name, secrets, configmaps, node_capacity or {})
        if value is not None:
            out[name] = value
    return out


def _value_from(pod: Mapping[str, Any], container: Mapping[str, Any], src: Mapping[str, Any], ns: str, name: str,
                secrets: Lookup, configmaps: Lookup, capacity: Mapping[str, str]) -> str | None:  # fmt: skip
    if src.get("fieldRef"):
        return field_value(pod, src["fieldRef"].get("fieldPath", ""))
    if src.get("resourceFieldRef"):
        return resource_value(container, src["resourceFieldRef"], capacity)
    for kind, lookup in (("secretKeyRef", secrets), ("configMapKeyRef", configmaps)):
        ref = src.get(kind)
        if not ref:
            continue
        data = lookup(ns, ref.get("name", ""))
        if data is None or ref.get("key") not in data:
            if ref.get("optional"):
                return None
            what = "not found" if data is None else f"has no key {ref.get('key')!r}"
            raise ContainerConfigError(f"env {name}: {kind} {ns}/{ref.get('name')} {what}")
        return data[ref["key"]]
    raise ContainerConfigError(f"env {name}: valueFrom has no supported source")


def command_line(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """``command + args`` with ``$(VAR)`` expanded. Raises ContainerConfigError without ``command``
    (the image's entrypoint is unknown: the dev node ignores images)."""
    command = list(container.get("command") or [])
    if not command:
        raise ContainerConfigError(
            f"container {container.get('name')!r} has no command; the dev node ignores images, so the "
            "entrypoint must be in the pod spec (command: [...])"
        )
    return [expand(a, env) for a in command + list(container.get("args") or [])]


@dataclass(frozen=True)
class Mount:
    """One bind mount of a container: host ``source`` folder (or file) onto ``target`` (``mountPath``)."""

    source: str
    target: str
    read_only: bool = False


def mounts(container: Mapping[str, Any], volume_dirs: Mapping[str, str]) -> list[Mount]:
    """The container's ``volumeMounts`` as host bind mounts, in spec order (``subPath`` joined).

    ``volume_dirs`` maps a pod volume name to its host folder. Raises ContainerConfigError for a mount
    of an unknown/unsupported volume, a relative ``mountPath`` or a ``subPath`` escaping its volume.
    """
    out = []
    for vm in container.get("volumeMounts") or []:
        name, target = vm.get("name", ""), vm.get("mountPath", "")
        if name not in volume_dirs:
            raise ContainerConfigError(f"volumeMount {name!r}: no such volume, or its type is not supported by "
                                       "the dev node (emptyDir, hostPath, configMap, secret are)")  # fmt: skip
        if not target.startswith("/"):
            raise ContainerConfigError(f"volumeMount {name!r}: mountPath {target!r} must be absolute")
        sub = vm.get("subPath") or ""
        if ".." in PurePosixPath(sub).parts or sub.startswith("/"):
            raise ContainerConfigError(f"volumeMount {name!r}: subPath {sub!r} must stay inside the volume")
        source = volume_dirs[name] + (f"/{sub}" if sub else "")
        out.append(Mount(source, target, bool(vm.get("readOnly"))))
    return out


TERMINATION_MESSAGE_MAX = 4096
"""Bytes of a termination message kept (kubelet's limit per container)."""


def termination_message_source(container: Mapping[str, Any], volume_dirs: Mapping[str, str]) -> str | None:
    """The host file behind the container's ``terminationMessagePath``, when that path lies in one of its volume
    mounts (the deepest); None otherwise (the default ``/dev/termination-log`` is not emulated here). A kubelet
    bind-mounts its own file at that path; on the dev node the container writes into the volume itself."""
    path = container.get("terminationMessagePath")
    if not path or not str(path).startswith("/"):
        return None
    best: Mount | None = None
    for m in mounts(container, volume_dirs):
        t = m.target.rstrip("/")
        if str(path).startswith(t + "/") and (best is None or len(t) > len(best.target)):
            best = m
    if best is None:
        return None
    rel = str(path)[len(best.target.rstrip("/")) + 1:]
    return str(PurePosixPath(best.source) / rel)


PRIVATE_TMP = "/tmp"
"""Where a container gets its private temporary folder (as in a container image, not shared with the host)."""


@dataclass(frozen=True)
class PrivateTmp:
    """A container's private ``/tmp``: host folder ``source`` mounted over ``/tmp``, except ``keep``.

    ``keep`` are host entries ``/tmp/<name>`` bound back at the same path inside the private ``/tmp``, because
    the container needs them (see :func:`tmp_entries_to_keep`); their mount points (``source/<name>``) must exist.
    """

    source: str
    keep: tuple[str, ...] = ()


def host_path(path: str, binds: Sequence[Mount]) -> str:
    """Where the container path ``path`` is on the host: below the deepest bind ``target`` that holds it (joined
    to its ``source``), else ``path`` itself. ``path`` is absolute."""
    norm = posixpath.normpath(path)
    best: Mount | None = None
    for m in binds:
        t = posixpath.normpath(m.target)
        if (norm == t or norm.startswith(t.rstrip("/") + "/")) and (best is None or len(t) > len(best.target)):
            best = m
    if best is None:
        return norm
    rest = norm[len(posixpath.normpath(best.target)):].lstrip("/")
    return posixpath.join(best.source, rest) if rest else best.source


def tmp_entries_to_keep(paths: Iterable[str], binds: Sequence[Mount] = (), tmp: str = PRIVATE_TMP) -> tuple[str, ...]:
    """The host entries ``<tmp>/<name>`` a private ``tmp`` would hide although the container needs them.

    ``paths`` are container paths the container needs (its command, the command's interpreter, PATH entries,
    workingDir, absolute arguments: see :func:`kresume.devtools.node.hostpaths.needed_paths`). A path below
    ``tmp`` and not below a bind target keeps its top-level entry (``/tmp/x/.venv/bin/python`` keeps ``/tmp/x``:
    the whole checkout, whose venv, sources and scripts the process reads). ``tmp`` itself and relative paths
    keep nothing. Sorted, without duplicates.
    """
    root = posixpath.normpath(tmp)
    keep = set()
    for p in paths:
        if not p.startswith("/"):
            continue
        norm = posixpath.normpath(p)
        if not norm.startswith(root + "/") or host_path(norm, binds) != norm:
            continue
        keep.add(posixpath.join(root, norm[len(root) + 1:].split("/", 1)[0]))
    return tuple(sorted(keep))


def mount_script(binds: list[Mount], working_dir: str | None, private_tmp: PrivateTmp | None = None) -> str:
    """``sh -c`` script run inside a private mount namespace: bind every mount, then the private ``/tmp`` (its
    ``keep`` entries bound into it first, so they stay visible), ``cd``, then ``exec "$@"``.

    The private ``/tmp`` comes last because volume folders may live under the host's ``/tmp``; it is a recursive
    bind so the kept entries come along. A failed mount exits the container with mount's code (32) before the
    command runs.
    """
    q = shlex.quote
    lines = ["set -e"]
    for m in binds:
        lines.append(f"mount --bind {q(m.source)} {q(m.target)}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {q(m.target)}")
    if private_tmp is not None:
        for entry in private_tmp.keep:
            inside = posixpath.join(private_tmp.source, posixpath.relpath(entry, PRIVATE_TMP))
            lines.append(f"mount --bind {q(entry)} {q(inside)}")
        lines.append(f"mount --rbind {q(private_tmp.source)} {PRIVATE_TMP}")
    if working_dir:
        lines.append(f"cd {q(working_dir)}")
    lines.append('exec "$@"')
    return "\n".join(lines)


def is_native_sidecar(init_container: Mapping[str, Any]) -> bool:
    """An init container with ``restartPolicy: Always`` (Kubernetes 1.28+ native sidecar)."""
    return init_container.get("restartPolicy") == "Always"
