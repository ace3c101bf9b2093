"""Just enough of the protobuf wire format to find tensors an ONNX model keeps outside itself (onnx-free).

ONNX Runtime loads a model's external data (``data_location: EXTERNAL``) from files named in the model;
for a model given as bytes it looks for them under the working folder, which the bundle's hashes do not
cover. A bundle's models never keep data outside, so :func:`external_tensors` lets the runtime refuse such a
model before ONNX Runtime sees it, on a board that has onnxruntime but not the ``onnx`` package.

Field numbers are those of ``onnx.proto``; only the messages that can hold a tensor are walked.
"""

from __future__ import annotations

from collections.abc import Iterator

from rkd_edge.runtime.bundle import BundleError

# message -> {field number: message type of that field}; fields not listed are skipped unread.
_SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training_info", 25: "function"},
    "training_info": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse_tensor"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse_tensor", 23: "sparse_tensor"},
    "sparse_tensor": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_MAX_DEPTH = 100  # protobuf's own recursion limit when it parses a model (subgraphs nest 3 messages a level)


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: bytes, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= end or shift > 63:
            raise WireError("truncated or overlong varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _field(buf: bytes, i: int, end: int, depth: int = 0) -> tuple[int, int, int, int]:
    """The field at ``buf[i:end]``: ``(field, wire type, a, next i)``, where ``a`` is a varint's value or
    where a length-delimited payload starts (it ends at the next i); a group (deprecated, still valid, and
    no ONNX field) is read to its end-group tag."""
    key, i = _varint(buf, i, end)
    if key >= 1 << 32:  # protobuf keeps a tag's low 32 bits: a longer one would name another field there
        raise WireError("a field tag beyond 32 bits")
    field, wire = key >> 3, key & 7
    if wire == 0:
        a, i = _varint(buf, i, end)
    elif wire == 2:
        size, a = _varint(buf, i, end)
        i = a + size
    elif wire in (1, 5):
        a, i = i, i + (8 if wire == 1 else 4)
    elif wire == 3:
        if depth > _MAX_DEPTH:
            raise WireError("groups nested too deeply")
        a, inner, inner_wire = i, None, None
        while inner_wire != 4:
            if i >= end:
                raise WireError("a group is not closed")
            inner, inner_wire, _, i = _field(buf, i, end, depth + 1)
        if inner != field:
            raise WireError("a group ends with another field's tag")
    elif wire == 4:  # an end-group tag: the group reading it checks it
        a = i
    else:
        raise WireError(f"unsupported wire type {wire}")
    if i > end:
        raise WireError("a field runs past the end of its message")
    return field, wire, a, i


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field, wire type, a, b)`` of each varint and length-delimited field in ``buf[start:end]``: for a
    varint ``a`` is its value, for a length-delimited field ``buf[a:b]`` is its payload."""
    i = start
    while i < end:
        field, wire, a, i = _field(buf, i, end)
        if wire == 4:
            raise WireError("an end-group tag outside a group")
        if wire in (0, 2):
            yield field, wire, a, i


def external_tensors(model: bytes) -> int:
    """How many tensors in a serialised ONNX ``ModelProto`` keep their data in another file (initializers,
    sparse initializers, attribute tensors, in subgraphs, functions and training graphs too).

    Raises:
        WireError: ``model`` is not a well-formed protobuf message.
    """
    found = 0
    stack = [("model", 0, len(model), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise WireError("messages nested too deeply")
        children = _SCHEMA[kind]
        external = False
        for field, wire, a, b in _fields(model, start, end):
            if kind == "tensor":
                # Any location but DEFAULT (0) counts: protobuf reads the enum's low 32 bits, so 2**32 + 1 is
                # EXTERNAL there; external_data entries count even without it.
                external |= field == _TENSOR_EXTERNAL_DATA or (field == _TENSOR_DATA_LOCATION and a != 0)
            elif wire == 2 and field in children:
                stack.append((children[field], a, b, depth + 1))
        found += external
    return found


def check_self_contained(model: bytes, name: str) -> bytes:
    """``model`` if it keeps every tensor inside itself; else :class:`BundleError` (one line): ONNX Runtime
    or TensorRT would read the rest, unhashed, from the folder the command runs in."""
    try:
        outside = external_tensors(model)
    except WireError as exc:
        raise BundleError(f"{name} is not a valid ONNX model ({exc}); re-export the bundle") from None
    if outside:
        raise BundleError(
            f"{name} keeps {outside} tensor(s) in other files (external data), which no bundle does and the "
            "manifest's hashes do not cover; re-export the bundle"
        )
    return model
