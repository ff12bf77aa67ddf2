"""Decoding of Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``).

kubectl's typed clients (``kubectl create namespace|configmap|secret|deployment|job``, ``kubectl run``)
send protobuf and never fall back to JSON. The ``.proto`` schemas are not shipped anywhere installable,
but every Go binary carries the reflection data of its types, including the struct tags
(``json:"data,omitempty" protobuf:"bytes,2,rep,name=data"``). This module reads that data from the
pinned kubectl binary (ELF, Go 1.21+ ``abi.Type`` layout) once, lazily, and decodes the protobuf
envelope (``k8s\\0`` + ``runtime.Unknown``) into the same JSON a client would have sent.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import orjson

MAGIC = b"k8s\x00"

_K_BOOL, _K_INT, _K_INT8, _K_INT16, _K_INT32, _K_INT64 = 1, 2, 3, 4, 5, 6
_K_UINT, _K_UINT8, _K_UINT16, _K_UINT32, _K_UINT64 = 7, 8, 9, 10, 11
_K_FLOAT32, _K_FLOAT64 = 13, 14
_K_MAP, _K_PTR, _K_SLICE, _K_STRING, _K_STRUCT = 21, 22, 23, 24, 25
_SIGNED = {_K_INT, _K_INT8, _K_INT16, _K_INT32, _K_INT64}
_UNSIGNED = {_K_UINT, _K_UINT8, _K_UINT16, _K_UINT32, _K_UINT64}


class ProtobufError(Exception):
    """The body cannot be decoded (unknown kind, no type data, malformed message)."""


def _find_kubectl() -> Path | None:
    env = os.environ.get("STATEFERRY_KUBECTL")
    candidates = [env] if env else []
    candidates += [str(Path(sys.executable).parent / "kubectl"), shutil.which("kubectl") or ""]
    for cand in candidates:
        if cand and Path(cand).exists():
            return Path(os.path.realpath(cand))
    return None


class GoTypes:
    """Struct layouts (field name, tags, type) read from a Go binary's reflection data."""

    def __init__(self, path: Path) -> None:
        self.data = path.read_bytes()
        d = self.data
        if d[:4] != b"\x7fELF":
            raise ProtobufError(f"{path} is not an ELF binary")
        shoff = struct.unpack_from("<Q", d, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 0x3A)
        secs = [struct.unpack_from("<IIQQQQ", d, shoff + i * shentsize) for i in range(shnum)]
        strtab = secs[shstrndx][4]

        def sname(n: int) -> str:
            start = strtab + n
            return d[start : d.index(b"\0", start)].decode()

        by_name = {sname(s[0]): s for s in secs}
        self.maps = [(s[3], s[3] + s[5], s[4]) for s in secs if s[3] and s[1] != 8]  # skip NOBITS
        self.base = by_name[".rodata"][3]
        typelink = by_name[".typelink"]
        offsets = struct.unpack_from(f"<{typelink[5] // 4}i", d, typelink[4])
        self.structs: dict[tuple[str, str], int] = {}
        for o in offsets:
            t = self.base + o
            try:
                if self.kind(t) != _K_PTR:
                    continue
                elem = self.u64(t + 48)
                if self.kind(elem) == _K_STRUCT:
                    self.structs[(self.pkg_path(elem), self.type_name(elem))] = elem
            except (ValueError, struct.error, IndexError, UnicodeDecodeError):
                continue

    def off(self, addr: int) -> int:
        """File offset of a virtual address."""
        for lo, hi, fo in self.maps:
            if lo <= addr < hi:
                return addr - lo + fo
        raise ValueError(hex(addr))

    def u64(self, addr: int) -> int:
        """The 8-byte little-endian word at ``addr``."""
        return int(struct.unpack_from("<Q", self.data, self.off(addr))[0])

    def _varint(self, p: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            b = self.data[p]
            p += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value, p

    def name(self, addr: int) -> tuple[str, str]:
        """(name, tag) of an ``abi.Name``."""
        p = self.off(addr)
        flags = self.data[p]
        n, p = self._varint(p + 1)
        name = self.data[p : p + n].decode()
        p += n
        tag = ""
        if flags & 2:
            tn, p = self._varint(p)
            tag = self.data[p : p + tn].decode()
        return name, tag

    def kind(self, t: int) -> int:
        """``abi.Kind`` of the type at ``t``."""
        return self.data[self.off(t) + 23] & 0x1F

    def type_name(self, t: int) -> str:
        """``v1.ConfigMap``, ``[]string``, ``*int32`` ..."""
        p = self.off(t)
        tflag = self.data[p + 20]
        str_off = struct.unpack_from("<i", self.data, p + 40)[0]
        name, _ = self.name(self.base + str_off)
        return name[1:] if tflag & 2 else name

    def pkg_path(self, t: int) -> str:
        """Package path of a named struct type (from its uncommon type)."""
        p = self.off(t)
        if not self.data[p + 20] & 1:
            return ""
        uncommon = t + 48 + 8 + 24
        rel = struct.unpack_from("<i", self.data, self.off(uncommon))[0]
        return self.name(self.base + rel)[0]

    def elem(self, t: int) -> int:
        """Element type of a pointer, slice or array."""
        return self.u64(t + 48)

    def map_types(self, t: int) -> tuple[int, int]:
        """(key, value) types of a map."""
        return self.u64(t + 48), self.u64(t + 56)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one instance per process
    def fields(self, t: int) -> dict[int, tuple[str, int, bool]]:
        """protobuf field number -> (JSON name, Go type, omitempty) of a struct."""
        out: dict[int, tuple[str, int, bool]] = {}
        ptr, n = self.u64(t + 56), self.u64(t + 64)
        for i in range(n):
            fa = ptr + 24 * i
            _name, tag = self.name(self.u64(fa))
            ftype = self.u64(fa + 8)
            tags = _parse_tag(tag)
            pb, js = tags.get("protobuf"), tags.get("json", "")
            if not pb:
                continue
            parts = pb.split(",")
            json_name = js.split(",")[0] or next((x[5:] for x in parts if x.startswith("name=")), _name)
            out[int(parts[1])] = (json_name, ftype, "omitempty" in js.split(",")[1:])
        return out


def _parse_tag(tag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(tag):
        while i < len(tag) and tag[i] == " ":
            i += 1
        j = tag.find(":", i)
        if j < 0 or j + 1 >= len(tag) or tag[j + 1] != '"':
            break
        k = tag.find('"', j + 2)
        while k > 0 and tag[k - 1] == "\\":
            k = tag.find('"', k + 1)
        if k < 0:
            break
        out[tag[i:j]] = tag[j + 2 : k]
        i = k + 1
    return out


@functools.cache
def _types() -> GoTypes:
    path = _find_kubectl()
    if path is None:
        raise ProtobufError("no kubectl binary to read protobuf type data from")
    return GoTypes(path)


def _fields_of(msg: bytes) -> list[tuple[int, int, Any]]:
    out: list[tuple[int, int, Any]] = []
    p = 0
    n = len(msg)
    while p < n:
        key, p = _varint(msg, p)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, p = _varint(msg, p)
            out.append((num, wt, v))
        elif wt == 2:
            ln, p = _varint(msg, p)
            out.append((num, wt, msg[p : p + ln]))
            p += ln
        elif wt == 1:
            out.append((num, wt, msg[p : p + 8]))
            p += 8
        elif wt == 5:
            out.append((num, wt, msg[p : p + 4]))
            p += 4
        else:
            raise ProtobufError(f"unsupported wire type {wt}")
    return out


def _varint(buf: bytes, p: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if p >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[p]
        p += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, p


_SPECIAL = {
    "v1.Time",
    "v1.MicroTime",
    "intstr.IntOrString",
    "resource.Quantity",
    "runtime.RawExtension",
    "v1.FieldsV1",
}


class _Decoder:
    def __init__(self, types: GoTypes) -> None:
        self.t = types

    def message(self, t: int, msg: bytes) -> Any:
        name = self.t.type_name(t)
        if name in _SPECIAL:
            return self._special(name, msg)
        fields = self.t.fields(t)
        out: dict[str, Any] = {}
        omit: set[str] = set()
        for num, wt, raw in _fields_of(msg):
            if num not in fields:
                continue
            json_name, ftype, omitempty = fields[num]
            if omitempty and self.t.kind(ftype) != _K_PTR:
                omit.add(json_name)
            self._field(out, json_name, ftype, wt, raw)
        # gogo-protobuf writes every non-pointer field; JSON would have left the zero ones out
        for key in omit:
            if out.get(key) in ("", 0, False, [], {}) and out.get(key) is not None:
                del out[key]
        return out

    def _special(self, name: str, msg: bytes) -> Any:
        f = {num: raw for num, _wt, raw in _fields_of(msg)}
        if name in ("v1.Time", "v1.MicroTime"):
            if not f:
                return None  # the zero time is marshalled as an empty message
            secs = f.get(1, 0)
            secs = secs - (1 << 64) if secs >= 1 << 63 else secs
            ts = dt.datetime.fromtimestamp(secs, dt.UTC)
            return ts.strftime("%Y-%m-%dT%H:%M:%SZ")
        if name == "intstr.IntOrString":
            if f.get(1, 0) == 1:
                return bytes(f.get(3, b"")).decode()
            v = f.get(2, 0)
            return v - (1 << 64) if v >= 1 << 63 else v
        if name == "resource.Quantity":
            return bytes(f.get(1, b"")).decode()
        raw = bytes(f.get(1, b""))
        return orjson.loads(raw) if raw else None

    def scalar(self, t: int, wt: int, raw: Any) -> Any:
        kind = self.t.kind(t)
        if kind == _K_PTR:
            return self.scalar(self.t.elem(t), wt, raw)
        if kind == _K_STRING:
            return bytes(raw).decode()
        if kind == _K_BOOL:
            return bool(raw)
        if kind in _SIGNED:
            return raw - (1 << 64) if raw >= 1 << 63 else raw
        if kind in _UNSIGNED:
            return raw
        if kind == _K_FLOAT64:
            return struct.unpack("<d", raw)[0]
        if kind == _K_FLOAT32:
            return struct.unpack("<f", raw)[0]
        if kind == _K_STRUCT:
            return self.message(t, bytes(raw))
        if kind == _K_SLICE and self.t.kind(self.t.elem(t)) == _K_UINT8:
            return base64.b64encode(bytes(raw)).decode()
        raise ProtobufError(f"cannot decode {self.t.type_name(t)}")

    def _field(self, out: dict[str, Any], name: str, t: int, wt: int, raw: Any) -> None:
        kind = self.t.kind(t)
        if kind == _K_PTR:
            t, kind = self.t.elem(t), self.t.kind(self.t.elem(t))
        if kind == _K_SLICE:
            elem = self.t.elem(t)
            ekind = self.t.kind(elem)
            if ekind == _K_UINT8:
                out[name] = base64.b64encode(bytes(raw)).decode()
                return
            items = out.setdefault(name, [])
            if wt == 2 and ekind in _SIGNED | _UNSIGNED | {_K_BOOL}:
                p = 0
                while p < len(raw):
                    v, p = _varint(raw, p)
                    items.append(self.scalar(elem, 0, v))
                return
            items.append(self.scalar(elem, wt, raw))
            return
        if kind == _K_MAP:
            key_t, val_t = self.t.map_types(t)
            entry = {num: (w, r) for num, w, r in _fields_of(bytes(raw))}
            key = self.scalar(key_t, *entry[1]) if 1 in entry else ""
            value: Any
            if 2 in entry:
                value = self.scalar(val_t, *entry[2])
            else:
                vk = self.t.kind(val_t)
                value = "" if vk in (_K_STRING, _K_SLICE) else {} if vk == _K_STRUCT else None
            out.setdefault(name, {})[key] = value
            return
        out[name] = self.scalar(t, wt, raw)


def _package(api_version: str) -> list[str]:
    group, _, version = api_version.rpartition("/")
    if not group:
        return [f"k8s.io/api/core/{version}"]
    if group == "apiextensions.k8s.io":
        return [f"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/{version}"]
    if group == "meta.k8s.io":
        return [f"k8s.io/apimachinery/pkg/apis/meta/{version}"]
    short = group.split(".")[0]
    return [f"k8s.io/api/{short}/{version}", f"k8s.io/apimachinery/pkg/apis/meta/{version}"]


def decode(body: bytes) -> dict[str, Any]:
    """Decode a ``k8s\\0`` protobuf envelope into the object's JSON form (with apiVersion/kind)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic number")
    envelope = {num: raw for num, _wt, raw in _fields_of(body[4:])}
    type_meta = {num: bytes(raw).decode() for num, _wt, raw in _fields_of(bytes(envelope.get(1, b"")))}
    api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
    types = _types()
    for pkg in _package(api_version):
        t = types.structs.get((pkg, f"{api_version.rpartition('/')[2]}.{kind}"))
        if t is not None:
            obj = _Decoder(types).message(t, bytes(envelope.get(2, b"")))
            return {"apiVersion": api_version, "kind": kind, **obj}
    raise ProtobufError(f"no protobuf type data for {api_version} {kind}")
