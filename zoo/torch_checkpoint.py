"""Reading PyTorch checkpoints (`.pth` files from `torch.save`) without torch and without running code.

A `.pth` is a pickle, and unpickling runs whatever callables the pickle names: loading an
untrusted one with plain `pickle` (or `torch.load(weights_only=False)`) can run any command.
This module reads the two formats `torch.save` writes with a `pickle.Unpickler` whose
`find_class` hands out only stand-ins for the few names a state dict needs, so nothing from the
file is ever called; the tensors are rebuilt as NumPy arrays from their raw bytes. torch is not
needed (nor imported).

    >>> from zoo.torch_checkpoint import read_state_dict
    >>> state = read_state_dict("fasterrcnn_resnet50_fpn_coco-258fb6c6.pth")
    >>> state["backbone.body.conv1.weight"].shape       # torch's layout: (out, in, kh, kw)
    (64, 3, 7, 7)

Formats:

- the zip format (torch >= 1.6, the default): a zip holding `<folder>/data.pkl` (the pickle),
  `<folder>/data/<key>` (one raw storage per key), `<folder>/byteorder` (`little` or `big`;
  absent in files of torch < 2.1, which are read as little-endian) and `<folder>/version`; the
  folder's name varies (it is the file's stem when it was saved).
- the legacy format (`_use_new_zipfile_serialization=False`, and torch < 1.6: torchvision's
  published COCO detection weights): five pickles in a row (a magic number, the protocol
  version 1001, a dict of system information, the object, the sorted storage keys), then each
  storage as an 8-byte little-endian element count and its bytes, always little-endian.
- the tar format of torch < 0.4 and TorchScript archives (`torch.jit.save`) are refused.

What a pickle may name (`ALLOWED_GLOBALS`, the subset of `torch.load(weights_only=True)`'s
allow-list that a state dict uses): `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
`torch._utils._rebuild_parameter` and `_rebuild_parameter_with_state`, the storage types
`torch.{Float,Double,Half,BFloat16,Long,Int,Short,Char,Byte,Bool}Storage`, and
`_codecs.encode` (how protocol 2 writes `bytes`). Anything else (`os.system`, `builtins.eval`, a
pickled `nn.Module`, a quantized or complex storage) is refused with a `TorchCheckpointError`
naming it, before it is looked up: no module is imported on the file's behalf. Persistent ids
must be `('storage', storage_type, key, location, numel)` (legacy: with a sixth item, a view).

Tensors come back as C-contiguous NumPy arrays copied out of their storage through their
storage offset, size and stride (so a transposed or sliced tensor, or several tensors sharing
one storage, come back as torch shows them), in the native byte order: float32, float16,
float64, int64, int32, int16, int8, uint8 and bool keep their dtype; bfloat16 becomes float32
(exactly: a bfloat16 is the top half of a float32). Tensors stored with torch's conjugate or
negative bit are refused. The location (`cpu`, `cuda:0`) is ignored.

Limits: every size is checked against the file before anything is read, and the storages read
plus the arrays made may take at most `max_bytes` bytes (default
`zoo.weights.archive_byte_limit(path)`: 100 times the file's size, at least 16 MiB;
`$ZOO_MAX_ARCHIVE_BYTES` sets another), so a zip member that inflates without end or a tensor
that repeats one element through zero strides is refused instead of filling the memory.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import re
import struct
import typing
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided

from zoo.weights import ENV_MAX_ARCHIVE_BYTES, archive_byte_limit

# torch/serialization.py: the legacy format's first two pickles.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch storage type -> (NumPy dtype of one stored element, without byte order; dtype returned).
# bfloat16 is read as its 16 bits and widened to float32; bool as bytes (any non-zero is True).
STORAGE_TYPES = {
    "FloatStorage": ("f4", "float32"),
    "DoubleStorage": ("f8", "float64"),
    "HalfStorage": ("f2", "float16"),
    "BFloat16Storage": ("u2", "float32"),
    "LongStorage": ("i8", "int64"),
    "IntStorage": ("i4", "int32"),
    "ShortStorage": ("i2", "int16"),
    "CharStorage": ("i1", "int8"),
    "ByteStorage": ("u1", "uint8"),
    "BoolStorage": ("u1", "bool"),
}
REBUILD_FUNCTIONS = ("_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state")
ALLOWED_GLOBALS = (
    ("collections.OrderedDict", "_codecs.encode")
    + tuple(f"torch._utils.{name}" for name in REBUILD_FUNCTIONS)
    + tuple(f"torch.{name}" for name in STORAGE_TYPES)
)


class TorchCheckpointError(ValueError):
    """A file that is not a readable PyTorch checkpoint, or one that asks for something a state
    dict does not need (and is therefore refused without running it)."""


# --------------------------------------------------------------------------- stand-ins
# What the pickle receives for the names it may use. None of them has an instance `__dict__`
# or a settable attribute, so the pickle's BUILD opcode cannot change them; the records are
# tuples, checked where they are used; nothing from the file is called.


class _StorageType(typing.NamedTuple):
    """What `torch.FloatStorage` and its kind unpickle to."""

    name: str
    element: str  # NumPy dtype of a stored element, without byte order
    dtype: str  # dtype of the arrays returned


class _Storage(typing.NamedTuple):
    """A storage a tensor refers to: `key` names its bytes (`data/<key>` in the zip format);
    `view` is the legacy format's `(offset, numel)` of a view into it, in elements."""

    type: _StorageType
    key: str
    numel: int
    view: tuple | None


class _Tensor(typing.NamedTuple):
    """A tensor: `size[i]` elements along dimension i, `stride[i]` elements apart, from `offset`."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


class _Function:
    """A callable the pickle may name; the subclass checks the arguments."""

    __slots__ = ()
    name = ""

    def __call__(self, *args):
        raise NotImplementedError

    def refuse(self, what: str):
        raise TorchCheckpointError(f"{self.name}: {what}")


def _is_index(value) -> bool:
    return type(value) is int and value >= 0


def _is_index_tuple(value) -> bool:
    return type(value) is tuple and all(_is_index(item) for item in value)


class _RebuildTensor(_Function):
    """`torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
    backward_hooks, metadata=None)`."""

    __slots__ = ()
    name = "torch._utils._rebuild_tensor_v2"

    def __call__(self, storage=None, offset=None, size=None, stride=None, requires_grad=False, hooks=None,
                 metadata=None, *extra):
        if extra or type(storage) is not _Storage:
            self.refuse("expected (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])")
        if not (_is_index(offset) and _is_index_tuple(size) and _is_index_tuple(stride) and len(size) == len(stride)):
            self.refuse(f"storage_offset must be an int >= 0 and size and stride tuples of such ints of one length, "
                        f"got {offset!r}, {size!r}, {stride!r}")
        if type(requires_grad) is not bool or not isinstance(hooks, dict):
            self.refuse("requires_grad must be a bool and backward_hooks a dict")
        if metadata is not None and (not isinstance(metadata, dict) or any(metadata.values())):
            self.refuse(f"tensors with torch's conjugate or negative bit are not supported (metadata {metadata!r})")
        if math.prod(size):
            end = offset + sum((length - 1) * step for length, step in zip(size, stride)) + 1
            if end > _storage_numel(storage):
                self.refuse(f"a tensor of size {size}, stride {stride} and offset {offset} reaches element {end - 1} "
                            f"of a storage of {_storage_numel(storage)}")
        return _Tensor(storage, offset, size, stride)


class _RebuildParameter(_Function):
    """`torch._utils._rebuild_parameter(data, requires_grad, backward_hooks)`: the data."""

    __slots__ = ()
    name = "torch._utils._rebuild_parameter"
    arguments = 3

    def __call__(self, *args):
        if len(args) != self.arguments or type(args[0]) is not _Tensor:
            self.refuse(f"expected {self.arguments} arguments, a tensor first")
        return args[0]


class _RebuildParameterWithState(_RebuildParameter):
    """`torch._utils._rebuild_parameter_with_state(data, requires_grad, backward_hooks, state)`:
    the data (the Python attributes of the parameter are dropped)."""

    __slots__ = ()
    name = "torch._utils._rebuild_parameter_with_state"
    arguments = 4


class _Encode(_Function):
    """`_codecs.encode(text, "latin1")`: how pickle protocol 2 writes a `bytes` object."""

    __slots__ = ()
    name = "_codecs.encode"

    def __call__(self, text=None, encoding=None, *extra):
        if extra or type(text) is not str or encoding not in ("latin1", "latin-1"):
            self.refuse("only encode(str, 'latin1') (pickled bytes) is accepted")
        return text.encode("latin1")


_FUNCTIONS = {
    function.name: function
    for function in (_RebuildTensor(), _RebuildParameter(), _RebuildParameterWithState(), _Encode())
}
_STORAGE_TYPES = {
    f"torch.{name}": _StorageType(name, element, dtype) for name, (element, dtype) in STORAGE_TYPES.items()
}


def _storage_numel(storage: _Storage) -> int:
    return storage.view[1] if storage.view is not None else storage.numel


def _refusal(full_name: str) -> str:
    """Why `full_name` is refused, with a hint at what the file probably is."""
    hint = ""
    if full_name.startswith("__torch__."):
        hint = " (a TorchScript archive from torch.jit.save: save the model's state_dict() instead)"
    elif re.fullmatch(r"torch\.\w*Storage", full_name):
        hint = " (a storage type this reader does not support: quantized, complex or another dtype)"
    elif full_name.startswith("torch._utils._rebuild") or full_name.startswith("torch._tensor"):
        hint = " (a kind of tensor this reader does not support: sparse, quantized, nested, a subclass ...)"
    elif full_name.startswith(("torch", "torchvision")):
        hint = " (a pickled module or other object: save model.state_dict() instead)"
    return (
        f"the pickle asks for {full_name}, which a state dict does not need{hint}; refused without "
        f"importing or calling it. Only {', '.join(ALLOWED_GLOBALS)} are accepted"
    )


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only `ALLOWED_GLOBALS` (to stand-ins) and torch's storage ids."""

    def __init__(self, file, *, legacy: bool, allow_storages: bool = True):
        super().__init__(file, encoding="utf-8")
        self.legacy = legacy
        self.allow_storages = allow_storages
        self.storages: dict[str, _Storage] = {}  # root key -> its storage, as first seen
        self.views: dict[str, _Storage] = {}  # legacy view key -> its storage

    def find_class(self, module, name):
        full_name = f"{module}.{name}"
        if full_name == "collections.OrderedDict":
            return collections.OrderedDict  # a builtin type: immutable, its instances plain data
        if full_name in _FUNCTIONS:
            return _FUNCTIONS[full_name]
        if full_name in _STORAGE_TYPES:
            return _STORAGE_TYPES[full_name]
        raise TorchCheckpointError(_refusal(full_name))

    def persistent_load(self, pid):
        expected = ("('storage', storage_type, key, location, numel, view)" if self.legacy
                    else "('storage', storage_type, key, location, numel)")
        if not self.allow_storages:
            raise TorchCheckpointError(f"a storage reference {pid!r} where none may be")
        if type(pid) is not tuple or len(pid) != (6 if self.legacy else 5) or pid[0] not in ("storage", b"storage"):
            raise TorchCheckpointError(f"a persistent id must be {expected}, got {pid!r}")
        storage_type, key, location, numel = pid[1:5]
        if type(storage_type) is not _StorageType or storage_type not in _STORAGE_TYPES.values():
            raise TorchCheckpointError(f"a persistent id's storage type must be one of torch's storage types, got "
                                       f"{storage_type!r}")
        if not (type(key) is str and re.fullmatch(r"\w+", key) and _is_index(numel)
                and isinstance(location, (str, bytes))):
            raise TorchCheckpointError(f"a persistent id must be {expected} with a key of letters and digits and "
                                       f"a numel >= 0, got {pid!r}")
        storage = self.storages.setdefault(key, _Storage(storage_type, key, numel, None))
        if storage != (storage_type, key, numel, None):
            raise TorchCheckpointError(f"storage {key} is referred to as {storage.type.name} of {storage.numel} and "
                                       f"as {storage_type.name} of {numel} elements")
        view = pid[5] if self.legacy else None
        if view is None:
            return storage
        if not (type(view) is tuple and len(view) == 3 and type(view[0]) is str and _is_index(view[1])
                and _is_index(view[2]) and view[1] + view[2] <= numel):
            raise TorchCheckpointError(f"a storage view must be (key, offset, numel) inside its storage of {numel} "
                                       f"elements, got {view!r}")
        viewed = self.views.setdefault(view[0], storage._replace(view=(view[1], view[2])))
        if viewed != storage._replace(view=(view[1], view[2])):
            raise TorchCheckpointError(f"storage view {view[0]} is referred to as two different views")
        return viewed


# --------------------------------------------------------------------------- reading


class _Budget:
    """Bytes left to read and allocate; refuses the first request past the limit."""

    def __init__(self, path, limit: int):
        self.path, self.limit, self.used = path, limit, 0

    def take(self, count: int, what: str) -> None:
        self.used += count
        if self.used > self.limit:
            raise TorchCheckpointError(
                f"{self.path}: {what} would take the checkpoint past {self.limit:,} bytes of memory "
                f"(a decompression bomb or a crafted file?); refused. If you trust it, raise the limit with "
                f"{ENV_MAX_ARCHIVE_BYTES}=BYTES (or max_bytes=)"
            )


def _element_dtype(storage_type: _StorageType, byteorder: str) -> np.dtype:
    return np.dtype(("<" if byteorder == "little" else ">") + storage_type.element)


def _load_zip(path: Path, budget: _Budget):
    """The object of a zip-format checkpoint and `{storage key: 1-D array of its elements}`."""
    with zipfile.ZipFile(path) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        pickles = [name for name in infos if re.fullmatch(r"[^/]+/data\.pkl", name)]
        if len(pickles) != 1:
            raise TorchCheckpointError(
                f"{path} is a zip archive without exactly one <folder>/data.pkl ({len(pickles)} found): not a "
                f"torch.save checkpoint"
            )
        folder = pickles[0].split("/")[0]
        if f"{folder}/constants.pkl" in infos or any(name.startswith(f"{folder}/code/") for name in infos):
            raise TorchCheckpointError(
                f"{path} is a TorchScript archive (torch.jit.save), which holds code; refused: save the model's "
                f"state_dict() with torch.save instead"
            )

        def read(name: str) -> bytes:
            budget.take(infos[name].file_size, f"member {name} ({infos[name].file_size:,} bytes)")
            return archive.read(infos[name])

        byteorder = "little"
        if f"{folder}/byteorder" in infos:
            byteorder = read(f"{folder}/byteorder").decode("ascii", "replace")
            if byteorder not in ("little", "big"):
                raise TorchCheckpointError(f"{path}: byteorder must be 'little' or 'big', got {byteorder!r}")
        if f"{folder}/version" in infos and not re.fullmatch(rb"\s*\d+\s*", read(f"{folder}/version")):
            raise TorchCheckpointError(f"{path}: {folder}/version is not a format version number")

        unpickler = _RestrictedUnpickler(io.BytesIO(read(pickles[0])), legacy=False)
        result = unpickler.load()
        arrays = {}
        for key, storage in unpickler.storages.items():
            name = f"{folder}/data/{key}"
            dtype = _element_dtype(storage.type, byteorder)
            if name not in infos:
                raise TorchCheckpointError(f"{path}: storage {key} has no member {name}")
            if infos[name].file_size < storage.numel * dtype.itemsize:
                raise TorchCheckpointError(
                    f"{path}: member {name} holds {infos[name].file_size} bytes, storage {key} needs "
                    f"{storage.numel} x {dtype.itemsize}"
                )
            arrays[key] = np.frombuffer(read(name), dtype=dtype, count=storage.numel)
    return result, arrays


class _FileReader:
    """The reads the unpickler makes of a file, never asking for more than the file has left: the
    C unpickler allocates the length a pickle's opcode claims (BINBYTES8: up to 2**64) before
    reading. It has no `peek`, so the unpickler reads exactly up to the pickle's end."""

    def __init__(self, handle):
        self.handle, self.size = handle, os.fstat(handle.fileno()).st_size

    def read(self, count: int = -1) -> bytes:
        left = max(0, self.size - self.handle.tell())
        return self.handle.read(left if count is None or count < 0 else min(count, left))

    def readline(self) -> bytes:
        return self.handle.readline()

    def readinto(self, buffer) -> int:
        return self.handle.readinto(buffer)


def _load_legacy(path: Path, handle, budget: _Budget):
    """The object of a legacy-format checkpoint and `{storage key: 1-D array of its elements}`."""
    handle = _FileReader(handle)
    header = []
    for what in ("magic number", "protocol version", "system information"):
        try:
            header.append(_RestrictedUnpickler(handle, legacy=True, allow_storages=False).load())
        except Exception as error:  # any unpickling error or refusal: this is not a checkpoint at all
            raise TorchCheckpointError(
                f"{path} is not a PyTorch checkpoint (neither torch's zip format nor its legacy pickle format; "
                f"its {what} does not read: {type(error).__name__}: {error})"
            ) from None
        if what == "magic number" and header[0] != LEGACY_MAGIC_NUMBER:
            raise TorchCheckpointError(f"{path} is not a PyTorch checkpoint (not a zip, and no torch magic number)")
    if header[1] != LEGACY_PROTOCOL_VERSION or not isinstance(header[2], dict):
        raise TorchCheckpointError(f"{path}: legacy protocol version {header[1]!r}, expected {LEGACY_PROTOCOL_VERSION}")
    unpickler = _RestrictedUnpickler(handle, legacy=True)
    result = unpickler.load()
    keys = _RestrictedUnpickler(handle, legacy=True, allow_storages=False).load()
    if not (type(keys) is list and all(type(key) is str for key in keys)) or sorted(keys) != sorted(unpickler.storages):
        raise TorchCheckpointError(f"{path}: the storage keys {keys!r} are not those the pickle refers to")
    remaining = handle.size - handle.handle.tell()
    arrays = {}
    for key in keys:
        storage = unpickler.storages[key]
        dtype = _element_dtype(storage.type, "little")  # torch writes these little-endian on any machine
        count = handle.read(8)
        nbytes = storage.numel * dtype.itemsize
        if len(count) != 8 or struct.unpack("<q", count)[0] != storage.numel or nbytes > remaining - 8:
            raise TorchCheckpointError(f"{path}: storage {key} of {storage.numel} elements is not there (truncated?)")
        remaining -= 8 + nbytes
        budget.take(nbytes, f"storage {key}")
        arrays[key] = np.frombuffer(handle.read(nbytes), dtype=dtype)
    return result, arrays


def _materialize(tensor: _Tensor, arrays: dict, budget: _Budget) -> np.ndarray:
    """The tensor as a C-contiguous array in the native byte order."""
    base = arrays[tensor.storage.key]
    if tensor.storage.view is not None:
        start, count = tensor.storage.view
        base = base[start:start + count]
    count = math.prod(tensor.size)
    budget.take(count * np.dtype(tensor.storage.type.dtype).itemsize, f"a tensor of size {tensor.size}")
    if count == 0:
        values = np.zeros(tensor.size, dtype=base.dtype)
    else:
        strides = tuple(step * base.itemsize for step in tensor.stride)
        view = as_strided(base[tensor.offset:], shape=tensor.size, strides=strides, writeable=False)
        values = np.array(view, order="C")  # a copy, C-contiguous whatever the strides
    values = values.astype(values.dtype.newbyteorder("="), copy=False)
    if tensor.storage.type.name == "BFloat16Storage":
        return (values.astype(np.uint32) << 16).view(np.float32)
    if tensor.storage.type.dtype == "bool":
        return values != 0
    return values


def _unwrap(value, arrays: dict, budget: _Budget):
    """The unpickled object with tensors as arrays and every mapping a plain dict."""
    if type(value) is _Tensor:
        return _materialize(value, arrays, budget)
    if type(value) is _Storage:
        return _materialize(_Tensor(value, 0, (_storage_numel(value),), (1,)), arrays, budget)
    if type(value) in (dict, collections.OrderedDict):
        return {_unwrap(key, arrays, budget): _unwrap(item, arrays, budget) for key, item in value.items()}
    if type(value) in (list, tuple, set, frozenset):  # an array in a set or as a key: TypeError, unhashable
        return type(value)(_unwrap(item, arrays, budget) for item in value)
    if type(value) in (type(None), bool, int, float, complex, str, bytes, bytearray):
        return value
    shown = getattr(value, "name", type(value).__name__)
    raise TorchCheckpointError(f"the checkpoint holds {shown} itself as a value, not data")


def read_checkpoint(path: str | os.PathLike, *, max_bytes: int | None = None):
    """The object saved in the PyTorch checkpoint `path`, its tensors as NumPy arrays.

    Dicts (and OrderedDicts) come back as plain dicts in the file's order; lists, tuples,
    numbers, strings, bytes and None as they are. Nothing in the file is run: see the module's
    docstring for what is accepted.

    Args:
      path: a `.pth` / `.pt` file from `torch.save`, in the zip or the legacy format.
      max_bytes: the most bytes the storages read and the arrays made may take (default
        `zoo.weights.archive_byte_limit(path)`).

    Raises:
      TorchCheckpointError (a ValueError): not a checkpoint, truncated, over `max_bytes`, or a
        pickle asking for a callable a state dict does not need (named in the message).
      FileNotFoundError: no file at `path`.
    """
    path = Path(path)
    budget = _Budget(path, archive_byte_limit(path) if max_bytes is None else int(max_bytes))
    try:
        with open(path, "rb") as handle:
            start = handle.read(512)
            if len(start) >= 262 and start[257:262] == b"ustar":
                raise TorchCheckpointError(
                    f"{path} is in the tar format of torch < 0.4, which this reader does not support: load and save "
                    f"it again with a current torch"
                )
            handle.seek(0)
            # As torch decides: a zip starts with a local file header. (`zipfile.is_zipfile` also
            # looks for an end record in the last 64 KiB, which a legacy file's raw floats may hold.)
            if start.startswith(b"PK\x03\x04"):
                result, arrays = _load_zip(path, budget)
            else:
                result, arrays = _load_legacy(path, handle, budget)
        return _unwrap(result, arrays, budget)
    except TorchCheckpointError as error:
        if str(path) in str(error):
            raise
        raise TorchCheckpointError(f"{path}: {error}") from None
    except RecursionError:
        raise TorchCheckpointError(f"{path}: the pickle nests too deeply or refers to itself") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, TypeError, ValueError, KeyError,
            IndexError, AttributeError, OverflowError, UnicodeDecodeError, MemoryError) as error:
        raise TorchCheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {type(error).__name__}: {error}"
        ) from None


def read_state_dict(path: str | os.PathLike, *, key: str | None = None,
                    max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The state dict saved in `path`: `{parameter name: array}` in the file's order.

    Arrays are in torch's layout (a convolution kernel is `(out, in, kh, kw)`, a linear one
    `(out, in)`); bfloat16 becomes float32; see `read_checkpoint` and the module's docstring.

    Args:
      path: a `.pth` / `.pt` file from `torch.save(model.state_dict(), path)`.
      key: for a training checkpoint that holds the state dict under a key (`{"model": ...,
        "optimizer": ...}`), that key.
      max_bytes: as in `read_checkpoint`.

    Raises:
      TorchCheckpointError (a ValueError): as `read_checkpoint`, or the file does not hold a
        mapping of names to tensors (the message lists the keys that are not tensors).
    """
    state = read_checkpoint(path, max_bytes=max_bytes)
    if key is not None:
        if not isinstance(state, dict) or key not in state:
            keys = list(state)[:10] if isinstance(state, dict) else type(state).__name__
            raise TorchCheckpointError(f"{path}: key={key!r} is not in the checkpoint (it holds {keys})")
        state = state[key]
    if not isinstance(state, dict):
        raise TorchCheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of names to tensors")
    others = [name for name, value in state.items() if not (type(name) is str and isinstance(value, np.ndarray))]
    if others:
        nested = [name for name in others if isinstance(state[name], dict)]
        hint = f"; a training checkpoint? pass key= one of {nested}" if nested else ""
        raise TorchCheckpointError(
            f"{path}: not a state dict of names to tensors: {others[:10]} "
            f"{'are' if len(others) > 1 else 'is'} not{hint}"
        )
    return state
