"""Would the API server refuse the injected pod? The limits it enforces that kresume's additions can break.

Pure: :func:`introduced` compares the pod as it came with the injected pod and returns one line per rule the
injection breaks (a rule the pod already broke is the user's, not kresume's: the API server will say so itself).
The admission then admits the pod unchanged with a Warning saying what to shorten (issue 11 item 7: admission
never makes a pod invalid). Sources, Kubernetes ``k8s.io/apimachinery`` and ``pkg/apis/core/validation``:

* annotations: keys are qualified names (an optional DNS-1123 subdomain prefix ≤ 253 characters and ``/``, then
  a name ≤ 63 characters of ``[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?``), and keys plus values total at most
  256 KiB (``TotalAnnotationSizeLimitB``);
* container names (init and regular together, unique across both) and volume names (unique): DNS-1123 labels,
  ≤ 63 characters;
* env var names: ``[-._a-zA-Z][-._a-zA-Z0-9]*`` (``IsEnvVarName``), ``volumeMounts`` of one container at
  distinct ``mountPath`` s, each naming a volume of the pod;
* the whole object: etcd's default request limit, 1.5 MiB (``--max-request-bytes``), serialized as JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: apimachinery ``TotalAnnotationSizeLimitB``.
ANNOTATIONS_MAX_BYTES = 256 * 1024
#: etcd's default ``--max-request-bytes`` (1.5 MiB): a bigger object cannot be stored.
OBJECT_MAX_BYTES = 1536 * 1024
DNS1123_LABEL_MAX = 63
QUALIFIED_NAME_MAX = 63
PREFIX_MAX = 253
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def _annotation_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > PREFIX_MAX or not _DNS1123_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= QUALIFIED_NAME_MAX and bool(_QUALIFIED.match(name))


def annotation_bytes(annotations: dict[str, Any]) -> int:
    """Bytes the API server counts toward the annotation limit: every key plus every value (UTF-8)."""
    return sum(len(str(k).encode()) + len(str(v).encode()) for k, v in annotations.items())


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def problems(pod: dict[str, Any]) -> dict[str, str]:
    """Every rule of the module docstring ``pod`` breaks: rule key -> one line naming the field and the limit."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    out: dict[str, str] = {}
    ann = dict(meta.get("annotations") or {})
    for key in ann:
        if not _annotation_key_ok(str(key)):
            out[f"annotation-key/{key}"] = f"annotation key {key!r} is not a qualified name"
    size = annotation_bytes(ann)
    if size > ANNOTATIONS_MAX_BYTES:
        out["annotations-size"] = (f"annotations total {size} bytes, over the API server's limit of "
                                   f"{ANNOTATIONS_MAX_BYTES}")
    out.update(_names("container", [str(c.get("name") or "") for c in _containers(spec)]))
    volumes = [str(v.get("name") or "") for v in spec.get("volumes") or []]
    out.update(_names("volume", volumes))
    for c in _containers(spec):
        name = c.get("name")
        for e in c.get("env") or []:
            if not _ENV_NAME.match(str(e.get("name") or "")):
                out[f"env/{name}/{e.get('name')}"] = f"container {name!r}: env var name {e.get('name')!r} is not valid"
        paths = [str(m.get("mountPath") or "") for m in c.get("volumeMounts") or []]
        for path in sorted({p for p in paths if paths.count(p) > 1}):
            out[f"mount-path/{name}/{path}"] = f"container {name!r}: two volumeMounts at {path}"
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                out[f"mount-volume/{name}/{m.get('name')}"] = (f"container {name!r}: volumeMount of unknown volume "
                                                               f"{m.get('name')!r}")
    size = len(json.dumps(pod, separators=(",", ":")).encode())
    if size > OBJECT_MAX_BYTES:
        out["object-size"] = (f"the pod is {size} bytes as JSON, over etcd's default request limit of "
                              f"{OBJECT_MAX_BYTES}")
    return out


def _names(kind: str, names: list[str]) -> dict[str, str]:
    out = {f"{kind}-name/{n}": f"{kind} name {n!r} is not a DNS-1123 label of at most {DNS1123_LABEL_MAX} characters"
           for n in names if len(n) > DNS1123_LABEL_MAX or not _DNS1123_LABEL.match(n)}
    out.update({f"{kind}-twice/{n}": f"two {kind}s are named {n!r}; rename the pod's own one (kresume's names "
                "are reserved)" for n in sorted({n for n in names if names.count(n) > 1})})
    return out


def introduced(original: dict[str, Any], injected: dict[str, Any]) -> list[str]:
    """The problems ``injected`` has that ``original`` did not (kresume's to avoid), one line each with the fix.

    A rule the pod broke already (by key: the size rules by kind, names by name) is not kresume's."""
    before = problems(original)
    out = []
    for key, line in problems(injected).items():
        if key in before:
            continue
        if key == "annotations-size":
            have = annotation_bytes(dict((original.get("metadata") or {}).get("annotations") or {}))
            added = annotation_bytes(dict((injected.get("metadata") or {}).get("annotations") or {})) - have
            line += (f": kresume adds {added}; shorten the pod's own annotations ({have} bytes) by at least "
                     f"{have + added - ANNOTATIONS_MAX_BYTES}")
        elif key == "object-size":
            line += "; make the pod spec smaller (large env values or annotations)"
        out.append(line)
    return out
