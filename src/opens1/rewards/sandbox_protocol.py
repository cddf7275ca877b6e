"""The wire protocol between the two sandboxes of an assert-style code test (stdlib only;
sandbox.py copies it into each sandbox beside sandbox_worker.py, which imports it).

Framing: a message is 4 bytes of big-endian length, then that many bytes of ASCII JSON,
at most MAX_MESSAGE. Values: tagged JSON, so the receiving process rebuilds plain data
(None, bool, int, float, complex, str, bytes, bytearray, list, tuple, set, frozenset,
dict) from its own builtin types, and anything else travels as a handle (["R", n]) or a
module name (["M", name]); see sandbox_worker.py for why.
"""

from __future__ import annotations

import binascii
import json
import os
import struct

MAX_MESSAGE = 16 << 20  # bytes per message on the call pipes
MAX_NODES = 1_000_000  # values per encoded message
MAX_DEPTH = 100


# --- framing ------------------------------------------------------------------------


def send(fd: int, obj) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode("ascii")
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"message of {len(data)} bytes is over the {MAX_MESSAGE}-byte limit")
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def _read_exact(fd: int, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, min(n - len(out), 1 << 20))
        if not chunk:
            raise EOFError("the other process closed the pipe")
        out += chunk
    return bytes(out)


def recv(fd: int):
    (n,) = struct.unpack(">I", _read_exact(fd, 4))
    if n > MAX_MESSAGE:
        raise ValueError(f"message of {n} bytes is over the {MAX_MESSAGE}-byte limit")
    return json.loads(_read_exact(fd, n))


# --- values: tagged JSON ----------------------------------------------------------------


class Encoder:
    """Python values -> tagged JSON. `ref` turns a non-plain value into a handle (the
    solution side) or raises TypeError (the tests side)."""

    def __init__(self, ref):
        self.ref, self.nodes = ref, 0

    def __call__(self, x, depth: int = 0):
        self.nodes += 1
        if self.nodes > MAX_NODES or depth > MAX_DEPTH:
            raise ValueError("value too large or too deeply nested to pass")
        t = type(x)
        if x is None:
            return ["N"]
        if t is bool:
            return ["B", x]
        if t is int:
            return ["I", hex(x)]
        if t is float:
            return ["F", x.hex()]
        if t is complex:
            return ["C", x.real.hex(), x.imag.hex()]
        if t is str:
            return ["S", x]
        if t in (bytes, bytearray):
            return ["Y" if t is bytes else "A", binascii.b2a_base64(x, newline=False).decode("ascii")]
        if t in (list, tuple, set, frozenset):
            tag = {list: "L", tuple: "T", set: "E", frozenset: "Z"}[t]
            return [tag, [self(v, depth + 1) for v in x]]
        if t is dict:
            return ["D", [[self(k, depth + 1), self(v, depth + 1)] for k, v in x.items()]]
        return self.ref(x, self, depth)


def decode(v, remote, depth: int = 0):
    """Tagged JSON -> fresh builtin values; ["R", n] -> remote(n); ["M", name] -> module."""
    if depth > MAX_DEPTH or not isinstance(v, list) or not v or not isinstance(v[0], str):
        raise ValueError("malformed value")
    tag, args = v[0], v[1:]

    def one(kind):
        if len(args) != 1 or not isinstance(args[0], kind):
            raise ValueError(f"malformed {tag!r} value")
        return args[0]

    if tag == "N":
        return None
    if tag == "B":
        return bool(one(bool))
    if tag == "I":
        return int(one(str), 16)
    if tag == "F":
        return float.fromhex(one(str))
    if tag == "C":
        if len(args) != 2 or not all(isinstance(a, str) for a in args):
            raise ValueError("malformed complex")
        return complex(float.fromhex(args[0]), float.fromhex(args[1]))
    if tag == "S":
        return str(one(str))
    if tag in ("Y", "A"):
        raw = binascii.a2b_base64(one(str))
        return raw if tag == "Y" else bytearray(raw)
    if tag in ("L", "T", "E", "Z"):
        items = [decode(x, remote, depth + 1) for x in one(list)]
        return {"L": list, "T": tuple, "E": set, "Z": frozenset}[tag](items)
    if tag == "D":
        out = {}
        for pair in one(list):
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError("malformed dict item")
            out[decode(pair[0], remote, depth + 1)] = decode(pair[1], remote, depth + 1)
        return out
    if tag in ("R", "M"):
        return remote(tag, one(int if tag == "R" else str))
    raise ValueError(f"unknown value tag {tag!r}")
