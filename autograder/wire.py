"""The bytes that cross a sandbox's wall: frames on pipes, holding JSON and raw arrays.

Everything that comes out of a sandbox is untrusted: ``read_frame`` bounds every length
before reading, ``unpack`` accepts only plain numeric arrays (no pickle, no objects) of
bounded size and nesting. Used on both sides (the grader, and worker.py and served.py in
the sandbox), so it imports only numpy and the standard library.

A frame is ``<header length: 4 bytes><payload length: 8 bytes><JSON header><payload>``.
A value tree (``pack``/``unpack``) is JSON in which every array is replaced by
``{"array": index}``, the arrays' raw bytes following one another in the payload.
"""

import io
import json
import os
import struct

import numpy as np

_LENGTHS = struct.Struct(">IQ")
DTYPES = frozenset({"float64", "float32", "float16", "int64", "int32", "int16", "int8",
                    "uint8", "bool"})
MAX_HEADER_BYTES = 1 << 20
MAX_DEPTH = 16  # nesting of lists, tuples and dicts in a value tree
MAX_DIMS = 8
# Array elements in one call of a served function (served.py, reference_service.py): the
# captioner's largest legitimate call holds about 21,000.
MAX_CALL_ELEMENTS = 1 << 18
MAX_CALL_DIM = 4096  # no size of a legitimate call's arrays is larger (V = 443, T = 16)
MAX_CALL_BYTES = 8 * MAX_CALL_ELEMENTS + (1 << 16)


class WireError(ValueError):
    """A frame or value tree that breaks the format or its bounds."""


# ---------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------


def write_frame(fd: int, header: dict, payload: bytes = b"") -> None:
    """Write one whole frame to fd (blocking until the reader has taken it)."""
    head = json.dumps(header).encode()
    data = memoryview(_LENGTHS.pack(len(head), len(payload)) + head + payload)
    while data:
        data = data[os.write(fd, data):]


def _read_exactly(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the pipe mid-frame")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, max_payload: int) -> tuple[dict, bytes] | None:
    """The next frame on fd, or None at a clean end of the stream.

    Raises WireError for a frame over its bounds or with a header that is not a JSON
    object, EOFError for a stream cut mid-frame.
    """
    first = os.read(fd, _LENGTHS.size)
    if not first:
        return None
    lengths = first + _read_exactly(fd, _LENGTHS.size - len(first))
    head_size, payload_size = _LENGTHS.unpack(lengths)
    if head_size > MAX_HEADER_BYTES or payload_size > max_payload:
        raise WireError(f"frame of {head_size} + {payload_size} bytes is over its bounds")
    try:
        header = json.loads(_read_exactly(fd, head_size))
    except (ValueError, RecursionError) as exc:
        raise WireError(f"frame header is not JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise WireError("frame header is not a JSON object")
    return header, _read_exactly(fd, payload_size)


# ---------------------------------------------------------------------------------------
# Value trees: nested lists, tuples, dicts, scalars and arrays
# ---------------------------------------------------------------------------------------


def pack(value, to_array=np.asarray) -> tuple[object, bytes]:
    """(JSON-able tree, payload) for value; to_array turns a tensor into a numpy array
    (the default accepts numpy arrays only). Other objects raise TypeError."""
    arrays = []

    def walk(v, depth):
        if depth > MAX_DEPTH:
            raise TypeError("value nested too deeply")
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, (list, tuple)):
            items = [walk(x, depth + 1) for x in v]
            return {"tuple": items} if isinstance(v, tuple) else items
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise TypeError("dict keys must be strings")
            return {"dict": {k: walk(x, depth + 1) for k, x in v.items()}}
        array = np.asarray(to_array(v))  # tobytes() below writes C order
        if str(array.dtype) not in DTYPES:
            raise TypeError(f"cannot send an array of dtype {array.dtype}")
        arrays.append(array)
        return {"array": len(arrays) - 1, "dtype": str(array.dtype), "shape": list(array.shape)}

    tree = walk(value, 0)
    return tree, b"".join(a.tobytes() for a in arrays)


def leaves(value, kind) -> list:
    """The objects of type kind (tensors, arrays) in a value tree, in the order pack visits."""
    if isinstance(value, kind):
        return [value]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in leaves(v, kind)]
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in leaves(v, kind)]
    return []


def _array_header(node: dict, max_dim: int, max_dims: int) -> tuple[str, list[int]]:
    """(dtype, shape) of an array node, checked: a dtype of DTYPES and at most max_dims sizes,
    each an int from 0 to max_dim; WireError otherwise."""
    dtype, shape = node.get("dtype"), node.get("shape")
    if dtype not in DTYPES or not isinstance(shape, list) or len(shape) > max_dims or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= max_dim for n in shape):
        raise WireError("malformed array, or a size over the bounds")
    return dtype, shape


def _unpack_tree(node, depth: int, array):
    """The value a tree from pack() stands for, each array node made by array(node); WireError
    for anything pack() would not have produced."""
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_unpack_tree(x, depth + 1, array) for x in node]
    if isinstance(node, dict) and len(node) == 1 and isinstance(node.get("tuple"), list):
        return tuple(_unpack_tree(x, depth + 1, array) for x in node["tuple"])
    if isinstance(node, dict) and len(node) == 1 and isinstance(node.get("dict"), dict):
        return {str(k): _unpack_tree(x, depth + 1, array) for k, x in node["dict"].items()}
    if isinstance(node, dict) and "array" in node:
        return array(node)
    raise WireError("malformed value")


def unpack(tree, payload: bytes, max_elements: int, from_array=lambda a: a,
           max_dim: int | None = None, max_dims: int = MAX_DIMS):
    """The value that pack() made, checked; arrays become from_array(numpy array).

    Raises WireError for anything pack() would not have produced, arrays that hold more
    than max_elements elements together (an empty array counts as if its zero sizes were
    ones: its other sizes still shape what is computed from it), a size over max_dim or more
    than max_dims dimensions.
    """
    budget = [max_elements]
    offset = [0]

    def array(node):
        dtype, shape = _array_header(node, max_dim or max_elements, max_dims)
        count = 1
        for n in shape:
            count *= n
        budget[0] -= max(count, max([1, *shape]))
        if budget[0] < 0:
            raise WireError(f"arrays larger than {max_elements} elements in all")
        size = count * np.dtype(dtype).itemsize
        if offset[0] + size > len(payload):
            raise WireError("array data missing from the payload")
        data = np.frombuffer(payload, dtype=dtype, count=count, offset=offset[0]).reshape(shape)
        offset[0] += size
        return from_array(data.copy())

    value = _unpack_tree(tree, 0, array)
    if offset[0] != len(payload):
        raise WireError("payload longer than its arrays")
    return value


def split_frames(data: bytes, max_payload: int) -> list[tuple[dict, bytes]]:
    """The whole frames at the start of data (what a unit sent); a cut or malformed tail is
    dropped, since a unit may be stopped in the middle of a frame."""
    frames, offset = [], 0
    while offset + _LENGTHS.size <= len(data):
        head_size, payload_size = _LENGTHS.unpack_from(data, offset)
        start = offset + _LENGTHS.size
        end = start + head_size + payload_size
        if head_size > MAX_HEADER_BYTES or payload_size > max_payload or end > len(data):
            break
        try:
            header = json.loads(data[start:start + head_size])
        except (ValueError, RecursionError):
            break
        if not isinstance(header, dict):
            break
        frames.append((header, data[start + head_size:end]))
        offset = end
    return frames


# ---------------------------------------------------------------------------------------
# A worker group's job, and a unit's outputs
# ---------------------------------------------------------------------------------------
# A job is one .npz: JOB_DESCRIPTION (JSON: code, tests, limits) and every hidden input,
# keyed "<unit>/<test>/<case>/<name>". A unit reports each test's outputs as an .npz keyed
# "<test>/<case>/<name>" (case_key), on its own frame.

JOB_DESCRIPTION = "job.json"


def case_key(test: str, case: int, name: str) -> str:
    return f"{test}/{case}/{name}"


def pack_job(description: dict, inputs: dict[str, dict[str, np.ndarray]]) -> bytes:
    """The job's bytes; inputs: {unit: {case_key: array}}."""
    arrays = {f"{unit}/{key}": value for unit, by_key in inputs.items() for key, value in by_key.items()}
    arrays[JOB_DESCRIPTION] = np.frombuffer(json.dumps(description).encode(), dtype=np.uint8)
    blob = io.BytesIO()
    np.savez(blob, **arrays)
    return blob.getvalue()


def unpack_job(data: bytes):
    """(description, the .npz: its inputs are read lazily) of a job's bytes."""
    inputs = np.load(io.BytesIO(data), allow_pickle=False)
    return json.loads(inputs[JOB_DESCRIPTION].tobytes()), inputs


class UnitInputs:
    """An unpacked job's inputs of one unit, keyed case_key(...) as pack_job was given them
    (read lazily)."""

    def __init__(self, npz, unit: str):
        self._npz, self._prefix = npz, unit + "/"
        self.files = [k[len(self._prefix):] for k in npz.files if k.startswith(self._prefix)]

    def __getitem__(self, key):
        return self._npz[self._prefix + key]
