"""Just enough of the protobuf wire format to check an ONNX model before ONNX Runtime sees it (onnx-free).

ONNX Runtime loads a model's external data (``data_location: EXTERNAL``) from files named in the model;
for a model given as bytes it looks for them under the working folder, which the bundle's hashes do not
cover. And a model's author sets a control-flow operator's trip count: a ``Loop`` of 10**15 iterations held
ONNX Runtime for as long as it liked, past Ctrl-C (a signal is handled only when the call returns). A
bundle's models hold neither, so :func:`check_model` refuses both, on a board that has onnxruntime but not
the ``onnx`` package.

Field numbers are those of ``onnx.proto``; only the messages that can hold a tensor or a node are walked.
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
_NODE_OP_TYPE, _NODE_DOMAIN = 4, 7
# What export writes: ONNX's operators and ONNX Runtime's own (the CPU INT8 graphs' fused ones), no control
# flow. Another domain has no kernel here (or a custom library's); control flow runs as long as its author says.
DOMAINS = ("", "ai.onnx", "com.microsoft")
CONTROL_FLOW = ("Loop", "Scan", "If")
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


def _messages(model: bytes) -> Iterator[tuple[str, list[tuple[int, int, int, int]]]]:
    """``(kind, fields)`` of every message of :data:`_SCHEMA` in a serialised ``ModelProto`` (subgraphs,
    functions and training graphs too); ``fields`` as :func:`_fields` gives them.

    Raises:
        WireError: ``model`` is not a well-formed protobuf message.
    """
    stack = [("model", 0, len(model), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise WireError("messages nested too deeply")
        children = _SCHEMA[kind]
        fields = list(_fields(model, start, end))
        stack.extend((children[f], a, b, depth + 1) for f, wire, a, b in fields if wire == 2 and f in children)
        yield kind, fields


def external_tensors(model: bytes) -> int:
    """How many tensors in a serialised ONNX ``ModelProto`` keep their data in another file (initializers,
    sparse initializers, attribute tensors, in subgraphs, functions and training graphs too).

    Raises:
        WireError: ``model`` is not a well-formed protobuf message.
    """
    found = 0
    for kind, fields in _messages(model):
        # Any location but DEFAULT (0) counts: protobuf reads the enum's low 32 bits, so 2**32 + 1 is EXTERNAL
        # there; external_data entries count even without it.
        found += kind == "tensor" and any(
            f == _TENSOR_EXTERNAL_DATA or (f == _TENSOR_DATA_LOCATION and a != 0) for f, _, a, _ in fields
        )
    return found


def operators(model: bytes) -> set[tuple[str, str]]:
    """The ``(domain, op_type)`` of every node in a serialised ``ModelProto`` (subgraphs and functions too).

    Raises:
        WireError: ``model`` is not a well-formed protobuf message.
    """
    found = set()
    for kind, fields in _messages(model):
        if kind == "node":
            text = {f: model[a:b].decode("utf-8", "replace") for f, wire, a, b in fields if wire == 2}
            found.add((text.get(_NODE_DOMAIN, ""), text.get(_NODE_OP_TYPE, "")))
    return found


def _quantized(op: str) -> bool:
    """Whether ``op`` is one of the operators an INT8 graph holds (Q/DQ, QLinear*, *Integer*, QGemm...)."""
    return "Quantize" in op or "Integer" in op or op.startswith(("QLinear", "QGemm", "QAttention"))


def check_model(model: bytes, name: str, float_slot: bool = False) -> bytes:
    """``model`` if it keeps every tensor inside itself and holds only operators export writes; else
    :class:`BundleError` (one line): ONNX Runtime or TensorRT would read the rest, unhashed, from the folder
    the command runs in, or run an operator no bundle holds (control flow: for as long as its author says).
    ``float_slot``: it fills an fp32 (or fp16) slot, so an INT8 graph there (results labelled fp32) is refused.
    """
    try:
        outside, ops = external_tensors(model), operators(model)
    except WireError as exc:
        raise BundleError(f"{name} is not a valid ONNX model ({exc}); re-export the bundle") from None
    if outside:
        raise BundleError(
            f"{name} keeps {outside} tensor(s) in other files (external data), which no bundle does and the "
            "manifest's hashes do not cover; re-export the bundle"
        )
    if odd := sorted((d, op) for d, op in ops if d not in DOMAINS or op in CONTROL_FLOW):
        domain, op = odd[0]
        raise BundleError(
            f"{name} holds a {f'{domain}:' if domain else ''}{op[:60]} node, an operator export never writes "
            "(control flow or another domain); re-export the bundle"
        )
    if float_slot and (q := sorted(op for _, op in ops if _quantized(op))):
        raise BundleError(
            f"{name} is an INT8 graph ({q[0][:60]} nodes) in a floating-point slot of the manifest; re-export the "
            "bundle"
        )
    return model
