"""A scan of an ONNX model's protobuf for tensors kept outside its file (external data).

An engine's card holds the sha256 of ``model.onnx`` only, so weights kept beside
it are not covered; loading refuses such a model. The scan reads the protobuf's
structure itself, so that the onnx package (not a core dependency) is not needed.
"""

from __future__ import annotations

from collections.abc import Iterator

# ONNX messages that can hold tensors, by the fields (numbers from onnx.proto) that lead to
# them: a model's graph, its functions and training graphs; a graph's initialisers and
# nodes; a node's attributes (tensors and subgraphs, e.g. If and Loop bodies)
_ONNX_FIELDS: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
_TENSOR_EXTERNAL_DATA = 13  # TensorProto.external_data: (key 1, value 2), "location" first
_TENSOR_DATA_LOCATION = 14  # TensorProto.data_location; 1 is EXTERNAL


def _varint(data: bytes, i: int) -> tuple[int, int]:
    """Return the protobuf varint at ``data[i]`` and the index after it (IndexError: cut short)."""
    value = shift = 0
    while True:
        b = data[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return value, i
        shift += 7


def _fields(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field, wire type, a, b) of each field of the protobuf message at ``data[start:end]``.

    A length-delimited field (wire type 2) gives where its bytes start and end (a,
    b); a varint its value and the index after it; a fixed-size one its start and
    end. Raises ValueError where the bytes are not protobuf (IndexError where
    they are cut short).
    """
    i = start
    while i < end:
        tag, i = _varint(data, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _varint(data, i)
            yield field, wire, value, i
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > end:
                raise ValueError("a field runs past its message")
            yield field, wire, i, i + size
            i += size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield field, wire, i, i + size
            i += size
        else:  # (groups, unused by ONNX)
            raise ValueError(f"wire type {wire}")


def _external_data(data: bytes) -> str | None:
    """Return where an ONNX model keeps a tensor outside its file (None: every tensor is inside).

    Reads the protobuf's structure along the messages that can hold tensors, so
    that the onnx package (not a core dependency) is not needed; weights are
    skipped by their length, not read. A file that is not well-formed protobuf
    gives None: ONNX Runtime refuses it with its own error.
    """
    stack = [("model", 0, len(data))]
    try:
        while stack:
            kind, start, end = stack.pop()
            nested = _ONNX_FIELDS.get(kind, {})
            for field, wire, a, b in _fields(data, start, end):
                if kind == "tensor" and field == _TENSOR_DATA_LOCATION and wire == 0 and a == 1:
                    return "no location given"
                if kind == "tensor" and field == _TENSOR_EXTERNAL_DATA and wire == 2:
                    entry = {f: data[x:y] for f, w, x, y in _fields(data, a, b) if w == 2}
                    if entry.get(1) == b"location" and entry.get(2):
                        return entry[2].decode("utf-8", "replace")
                    return "no location given"
                if wire == 2 and field in nested:
                    stack.append((nested[field], a, b))
    except (IndexError, ValueError):
        return None
    return None
