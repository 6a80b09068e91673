"""zoo.torch_checkpoint without torch: checkpoints written here by hand in torch's zip and legacy
formats (the same pickle opcodes torch.save writes, through stand-ins that name torch's functions
without importing torch) read back with their values, dtypes, shapes, strides and shared storages;
pickles that ask for any other callable are refused without running it.
bench/torch_checkpoint_parity.py checks the reader against files written by torch itself."""

import base64
import collections
import io
import pickle
import struct
import sys
import zipfile
import zlib

import numpy as np
import pytest

from zoo import torch_checkpoint
from zoo.torch_checkpoint import TorchCheckpointError, read_checkpoint, read_state_dict

# --------------------------------------------------------------------------- a tiny torch.save


class Global:
    """A name the pickle refers to (GLOBAL module name), written without importing it."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce wants a callable; never called
        raise AssertionError("a stand-in is never called")


class Call:
    """`function(*args)` in the pickle (REDUCE)."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


class Storage:
    """A torch storage: its elements (a 1-D array of the storage's dtype) under `key`."""

    def __init__(self, type_name, values, key):
        self.type_name, self.values, self.key = type_name, np.ascontiguousarray(values), key


def tensor(storage, offset, size, stride, *, metadata=None, function="_rebuild_tensor_v2"):
    args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())
    return Call(Global("torch._utils", function), *(args + ((metadata,) if metadata is not None else ())))


def parameter(data, *, with_state=False):
    if with_state:
        return Call(Global("torch._utils", "_rebuild_parameter_with_state"), data, True, collections.OrderedDict(), {})
    return Call(Global("torch._utils", "_rebuild_parameter"), data, True, collections.OrderedDict())


def contiguous(type_name, values, key):
    """A tensor that owns its storage, as `torch.save` writes one."""
    values = np.asarray(values)
    strides = [int(np.prod(values.shape[i + 1:])) for i in range(values.ndim)]
    return tensor(Storage(type_name, values.reshape(-1), key), 0, values.shape, strides)


class TorchPickler(pickle._Pickler):
    """The pure-Python pickler, with `Global` written as GLOBAL and storages as persistent ids."""

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file, *, legacy):
        super().__init__(file, protocol=2)
        self.legacy, self.storages = legacy, {}

    def save_global_name(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[Global] = save_global_name

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        self.storages[obj.key] = obj
        pid = ("storage", Global("torch", obj.type_name), obj.key, "cpu", obj.values.size)
        return pid + (None,) if self.legacy else pid


def pickled(obj, *, legacy=False):
    buffer = io.BytesIO()
    pickler = TorchPickler(buffer, legacy=legacy)
    pickler.dump(obj)
    return buffer.getvalue(), pickler.storages


def write_zip(path, obj, *, folder="archive", byteorder="little", members=None):
    """`obj` in torch's zip format (torch >= 1.6)."""
    data, storages = pickled(obj)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{folder}/data.pkl", data)
        if byteorder is not None:
            archive.writestr(f"{folder}/byteorder", byteorder)
        archive.writestr(f"{folder}/version", "3\n")
        for key, storage in storages.items():
            order = "<" if byteorder in ("little", None) else ">"
            values = storage.values.astype(storage.values.dtype.newbyteorder(order))
            archive.writestr(f"{folder}/data/{key}", values.tobytes())
        for name, content in (members or {}).items():
            archive.writestr(f"{folder}/{name}", content)
    return path


def write_legacy(path, obj):
    """`obj` in torch's legacy format (`_use_new_zipfile_serialization=False`, torch < 1.6)."""
    body, storages = pickled(obj, legacy=True)
    with open(path, "wb") as handle:
        system = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 8}}
        for header in (torch_checkpoint.LEGACY_MAGIC_NUMBER, torch_checkpoint.LEGACY_PROTOCOL_VERSION, system):
            pickle.dump(header, handle, protocol=2)
        handle.write(body)
        keys = sorted(storages)
        pickle.dump(keys, handle, protocol=2)
        for key in keys:
            values = storages[key].values
            handle.write(struct.pack("<q", values.size) + values.astype(values.dtype.newbyteorder("<")).tobytes())
    return path


WRITERS = {"zip": write_zip, "legacy": write_legacy}


def bfloat16_bits(values):
    """The bfloat16 storage of float32 values that bfloat16 holds exactly."""
    return (np.asarray(values, np.float32).view(np.uint32) >> 16).astype(np.uint16)


# --------------------------------------------------------------------------- reading


@pytest.fixture(params=sorted(WRITERS))
def write(request):
    return WRITERS[request.param]


def test_every_dtype_reads_back_with_its_values(write, tmp_path, rng):
    values = {
        "float32": rng.normal(size=(2, 3)).astype(np.float32),
        "float64": rng.normal(size=(4,)),
        "float16": rng.normal(size=(3, 1)).astype(np.float16),
        "int64": np.array([-(2**40), 0, 7], np.int64),
        "int32": np.array([[-5, 2**30]], np.int32),
        "int16": np.array([-300, 300], np.int16),
        "int8": np.array([-128, 127], np.int8),
        "uint8": np.array([0, 255], np.uint8),
        "bool": np.array([True, False, True]),
    }
    types = {"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage", "int64": "LongStorage",
             "int32": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage", "uint8": "ByteStorage",
             "bool": "BoolStorage"}
    state = collections.OrderedDict(
        (name, contiguous(types[name], array, str(index))) for index, (name, array) in enumerate(values.items())
    )
    bfloat = np.array([1.0, -2.5, 3.140625, 2.0**100], np.float32)  # exact in bfloat16
    state["bfloat16"] = tensor(Storage("BFloat16Storage", bfloat16_bits(bfloat), "99"), 0, (4,), (1,))
    state["scalar"] = tensor(Storage("LongStorage", np.array([12], np.int64), "100"), 0, (), ())
    state["empty"] = tensor(Storage("FloatStorage", np.zeros(0, np.float32), "101"), 0, (0, 3), (3, 1))

    read = read_state_dict(write(tmp_path / "model.pth", state))

    assert list(read) == list(values) + ["bfloat16", "scalar", "empty"]  # the file's order
    for name, expected in values.items():
        assert read[name].dtype == expected.dtype and read[name].shape == expected.shape, name
        np.testing.assert_array_equal(read[name], expected)
    assert read["bfloat16"].dtype == np.float32
    np.testing.assert_array_equal(read["bfloat16"], bfloat)
    assert read["scalar"].shape == () and read["scalar"] == 12 and read["scalar"].dtype == np.int64
    assert read["empty"].shape == (0, 3) and read["empty"].dtype == np.float32
    assert all(array.flags.c_contiguous and array.dtype.isnative for array in read.values())


def test_non_contiguous_strides_and_shared_storages_with_offsets(write, tmp_path):
    storage = Storage("FloatStorage", np.arange(24, dtype=np.float32), "0")
    full = np.arange(24, dtype=np.float32)
    state = {
        "matrix": tensor(storage, 0, (4, 6), (6, 1)),
        "transposed": tensor(storage, 0, (6, 4), (1, 6)),  # matrix.t()
        "column": tensor(storage, 2, (4,), (6,)),  # matrix[:, 2]
        "block": tensor(storage, 7, (2, 3), (6, 2)),  # matrix[1:3, 1::2]
        "expanded": tensor(storage, 5, (3, 2), (0, 1)),  # a stride of 0 repeats
        "tail": tensor(storage, 20, (4,), (1,)),
    }
    read = read_state_dict(write(tmp_path / "views.pth", state))
    matrix = full.reshape(4, 6)
    np.testing.assert_array_equal(read["matrix"], matrix)
    np.testing.assert_array_equal(read["transposed"], matrix.T)
    np.testing.assert_array_equal(read["column"], matrix[:, 2])
    np.testing.assert_array_equal(read["block"], matrix[1:3, 1::2])
    np.testing.assert_array_equal(read["expanded"], np.broadcast_to(full[5:7], (3, 2)))
    np.testing.assert_array_equal(read["tail"], full[20:])
    assert all(array.flags.c_contiguous and array.flags.owndata for array in read.values())
    read["transposed"][0, 0] = -1  # copies: nothing else changes
    assert read["matrix"][0, 0] == 0


def test_parameters_and_training_checkpoints(write, tmp_path):
    weight = contiguous("FloatStorage", np.ones((2, 2), np.float32), "0")
    bias = contiguous("FloatStorage", np.zeros(2, np.float32), "1")
    checkpoint = {"model": collections.OrderedDict(weight=parameter(weight), bias=parameter(bias, with_state=True)),
                  "epoch": 3, "name": "run", "blob": b"\x00\xffbytes", "lr": [0.1, (1, None)]}
    path = write(tmp_path / "checkpoint.pth", checkpoint)

    everything = read_checkpoint(path)
    assert everything["epoch"] == 3 and everything["blob"] == b"\x00\xffbytes" and everything["lr"] == [0.1, (1, None)]
    assert type(everything["model"]) is dict
    state = read_state_dict(path, key="model")
    np.testing.assert_array_equal(state["weight"], np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"pass key= one of \['model'\]"):
        read_state_dict(path)
    with pytest.raises(ValueError, match="key='optimizer' is not in the checkpoint"):
        read_state_dict(path, key="optimizer")


def test_the_zip_folder_name_varies_and_big_endian_files_read(tmp_path):
    values = np.array([[1.5, -2.0], [3.25, 4.0]], np.float32)
    state = {"w": contiguous("FloatStorage", values, "0"),
             "b": tensor(Storage("BFloat16Storage", bfloat16_bits([1.0, -3.0]), "1"), 0, (2,), (1,)),
             "n": contiguous("LongStorage", np.array([1, -2], np.int64), "2")}
    for byteorder in ("big", "little", None):  # None: no byteorder record (torch < 2.1), little-endian
        path = write_zip(tmp_path / f"{byteorder}.pth", state, folder=f"resnet_{byteorder}", byteorder=byteorder)
        read = read_state_dict(path)
        np.testing.assert_array_equal(read["w"], values)
        np.testing.assert_array_equal(read["b"], [1.0, -3.0])
        np.testing.assert_array_equal(read["n"], [1, -2])
        assert all(array.dtype.isnative for array in read.values())


def test_no_torch_is_imported(tmp_path):
    path = write_zip(tmp_path / "model.pth", {"w": contiguous("FloatStorage", np.ones(2, np.float32), "0")})
    before = set(sys.modules)
    read_state_dict(path)
    assert not {name for name in set(sys.modules) - before if name.split(".")[0] in ("torch", "torchvision")}


# --------------------------------------------------------------------------- refusals


def run_marker(marker):
    """Callables that would leave `marker` behind if the pickle's request were granted."""
    return {
        "os.system": Call(Global("os", "system"), f"touch {marker}"),
        "posix.system": Call(Global("posix", "system"), f"touch {marker}"),
        "builtins.eval": Call(Global("builtins", "eval"), f"open({str(marker)!r}, 'w').close()"),
        "builtins.exec": Call(Global("builtins", "exec"), f"open({str(marker)!r}, 'w').close()"),
        "subprocess.Popen": Call(Global("subprocess", "Popen"), ["touch", str(marker)]),
        "__builtin__.eval": Call(Global("__builtin__", "eval"), f"open({str(marker)!r}, 'w').close()"),
    }


@pytest.mark.parametrize("name", sorted(run_marker("x")))
def test_a_pickle_asking_for_another_callable_is_refused_without_running_it(write, name, tmp_path):
    marker = tmp_path / "it_ran"
    weight = contiguous("FloatStorage", np.ones(2, np.float32), "0")
    state = collections.OrderedDict(weight=weight, evil=run_marker(marker)[name])
    path = write(tmp_path / "evil.pth", state)
    with pytest.raises(ValueError, match=rf"asks for {name}, which a state dict does not need.*refused") as caught:
        read_state_dict(path)
    assert isinstance(caught.value, TorchCheckpointError) and str(path) in str(caught.value)
    assert not marker.exists()


def test_a_hostile_call_hidden_inside_a_tensor_is_refused(tmp_path):
    marker = tmp_path / "it_ran"
    storage = Storage("FloatStorage", np.ones(2, np.float32), "0")
    hooks = collections.OrderedDict(hook=Call(Global("os", "system"), f"touch {marker}"))
    state = {"w": Call(Global("torch._utils", "_rebuild_tensor_v2"), storage, 0, (2,), (1,), False, hooks)}
    with pytest.raises(ValueError, match="os.system"):
        read_state_dict(write_zip(tmp_path / "hooks.pth", state))
    assert not marker.exists()


def test_modules_and_unsupported_tensors_are_refused_by_name(tmp_path):
    model = Call(Global("torchvision.models.detection.faster_rcnn", "FasterRCNN"))
    with pytest.raises(ValueError, match=r"faster_rcnn.FasterRCNN, which .*\(a pickled module.*save model.state_dict"):
        read_checkpoint(write_zip(tmp_path / "model.pth", {"model": model}))
    quantized = tensor(Storage("QInt8Storage", np.ones(2, np.int8), "0"), 0, (2,), (1,))
    with pytest.raises(ValueError, match=r"torch.QInt8Storage.*storage type this reader does not support"):
        read_checkpoint(write_zip(tmp_path / "quantized.pth", {"q": quantized}))
    sparse = Call(Global("torch._utils", "_rebuild_sparse_tensor"), 1)
    with pytest.raises(ValueError, match=r"_rebuild_sparse_tensor, which .*\(a kind of tensor"):
        read_checkpoint(write_zip(tmp_path / "sparse.pth", {"s": sparse}))
    negative = tensor(Storage("FloatStorage", np.ones(2, np.float32), "0"), 0, (2,), (1,), metadata={"neg": True})
    with pytest.raises(ValueError, match="conjugate or negative bit"):
        read_checkpoint(write_zip(tmp_path / "negative.pth", {"n": negative}))
    code = {"code/__torch__.py": "def forward(self): ...", "constants.pkl": b""}
    script = write_zip(tmp_path / "script.pt", {}, members=code)
    with pytest.raises(ValueError, match="TorchScript"):
        read_checkpoint(script)


def test_the_pickle_cannot_change_the_stand_ins(tmp_path):
    """BUILD (setstate) on what find_class returns fails, so a file cannot retarget them."""
    for target in (Global("torch", "FloatStorage"), Global("torch._utils", "_rebuild_tensor_v2")):
        build = b"N}X\x05\x00\x00\x00dtypeX\x01\x00\x00\x00Os\x86b"  # BUILD (None, {"dtype": "O"})
        data = b"\x80\x02c" + f"{target.module}\n{target.name}\n".encode() + build + b"."
        path = tmp_path / "build.pth"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", data)
        with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
            read_checkpoint(path)
    assert torch_checkpoint.STORAGE_TYPES["FloatStorage"] == ("f4", "float32")


def test_malformed_tensors_and_storages_are_refused(tmp_path):
    storage = Storage("FloatStorage", np.arange(6, dtype=np.float32), "0")
    cases = {
        "reaches element 6 of a storage of 6": tensor(storage, 1, (2, 3), (3, 1)),
        "storage_offset must be an int >= 0": tensor(storage, -1, (2,), (1,)),
        "size and stride tuples": tensor(storage, 0, (2, 3), (1,)),
        "expected \\(storage": Call(Global("torch._utils", "_rebuild_tensor_v2"), "storage", 0, (1,), (1,), False, {}),
    }
    for message, bad in cases.items():
        with pytest.raises(ValueError, match=message):
            read_checkpoint(write_zip(tmp_path / "bad.pth", {"bad": bad}))

    missing = tmp_path / "missing.pth"
    write_zip(missing, {"w": contiguous("FloatStorage", np.ones(4, np.float32), "0")})
    with zipfile.ZipFile(missing) as source, zipfile.ZipFile(tmp_path / "short.pth", "w") as target:
        for info in source.infolist():
            content = source.read(info)
            target.writestr(info.filename, content[:8] if info.filename.endswith("data/0") else content)
    with pytest.raises(ValueError, match="holds 8 bytes, storage 0 needs 4 x 4"):
        read_checkpoint(tmp_path / "short.pth")


def test_not_checkpoints_are_refused_clearly(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        read_checkpoint(text)
    other_zip = tmp_path / "model.keras"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(ValueError, match="without exactly one <folder>/data.pkl"):
        read_checkpoint(other_zip)
    tar = tmp_path / "old.pth"
    tar.write_bytes(bytes(257) + b"ustar" + bytes(250))
    with pytest.raises(ValueError, match="tar format of torch < 0.4"):
        read_checkpoint(tar)
    not_a_dict = write_zip(tmp_path / "list.pth", [1, 2])
    with pytest.raises(ValueError, match="holds a list, not a state dict"):
        read_state_dict(not_a_dict)


def test_truncated_legacy_files_are_refused(tmp_path):
    path = write_legacy(tmp_path / "model.pth", {"w": contiguous("FloatStorage", np.ones(8, np.float32), "0")})
    whole = path.read_bytes()
    for cut in (len(whole) - 4, len(whole) - 40, 30, 60):
        path.write_bytes(whole[:cut])
        with pytest.raises(ValueError):
            read_checkpoint(path)


def test_a_pickle_claiming_a_huge_length_is_refused_without_allocating_it(tmp_path):
    path = tmp_path / "claims.pth"
    with open(path, "wb") as handle:
        pickle.dump(torch_checkpoint.LEGACY_MAGIC_NUMBER, handle, protocol=2)
        pickle.dump(torch_checkpoint.LEGACY_PROTOCOL_VERSION, handle, protocol=2)
        pickle.dump({}, handle, protocol=2)
        handle.write(b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"abc")  # BINBYTES8 of 1 TiB
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_checkpoint(path)


def test_a_zip_bomb_and_a_tensor_repeated_without_end_are_refused(tmp_path):
    bomb = tmp_path / "bomb.pth"
    data, _ = pickled({"w": tensor(Storage("FloatStorage", np.zeros(2**22, np.float32), "0"), 0, (2**22,), (1,))})
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/data/0", bytes(2**24))  # 16 MiB of zeros in about 16 KB
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ValueError, match=r"past 1,048,576 bytes.*ZOO_MAX_ARCHIVE_BYTES"):
        read_checkpoint(bomb, max_bytes=2**20)
    assert read_state_dict(bomb, max_bytes=2**26)["w"].shape == (2**22,)  # a limit that fits

    repeated = write_zip(tmp_path / "repeated.pth", {"w": tensor(Storage("FloatStorage", np.ones(1, np.float32), "0"),
                                                                 0, (2**20, 2**20), (0, 0))})
    with pytest.raises(ValueError, match=r"a tensor of size \(1048576, 1048576\) would take"):
        read_checkpoint(repeated)


def test_a_legacy_file_ending_like_a_zip_is_still_read_as_legacy(tmp_path):
    """Raw storage bytes may hold a zip end record; the format is decided by the first bytes."""
    tail = np.frombuffer(b"PK\x05\x06" + bytes(18), np.uint8)
    path = write_legacy(tmp_path / "model.pth", {"tail": contiguous("ByteStorage", tail, "0")})
    assert zipfile.is_zipfile(path)
    np.testing.assert_array_equal(read_state_dict(path)["tail"], tail)


def test_a_refused_name_before_the_magic_number_says_it_is_no_checkpoint(tmp_path):
    marker = tmp_path / "it_ran"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickled(Call(Global("os", "system"), f"touch {marker}"))[0])
    with pytest.raises(ValueError, match=r"not a PyTorch checkpoint.*asks for os.system"):
        read_checkpoint(path)
    assert not marker.exists()


# --------------------------------------------------------------------------- files torch wrote
# torch 2.14's own torch.save of a small state dict (zlib + base64), so that the suite reads real
# torch output without torch: an OrderedDict with `_metadata` (set by BUILD), BatchNorm buffers
# with num_batches_tracked, bfloat16 and a transposed int32. Made with:
#   m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)); weight = arange(6).view(2, 3) / 8,
#   bias = [0.5, -0.25], running_mean 0.125, num_batches_tracked 7; sd = m.state_dict();
#   sd["bf16"] = tensor([1.5, -2.0], bfloat16); sd["transposed"] = arange(6, int32).view(2, 3).t()
#   torch.save(sd, f, _use_new_zipfile_serialization=True / False)
TORCH_ZIP = (
    "eNrFls1vG0UYxsd2YjumzRdtkwYopaTUaVPH67XXTvNVTFkoW2iyobDqxVrbW3tVZ53XO04FUqRIKJG4IU49cYEDN44gDigH/gEO"
    "cELi0APixA1xQszsbJydKYlT+8BIK8v2/p7nmZ2Z991VLTKAUDyOnhqjaByZrUrd3rLmqiY2U5sPG2pxGN3nxk64Umk2GlYF203H"
    "TdxtVa2WVb1lV3AC0IwOoaRBtdOpR5Zdq2MIV3CTiKZKbWw33ESpZZXbdqNawpbjNlulrUwCIsmkESOMS+40axYMMCShNpomXmc/"
    "JmDQCFFdiBoR8lnZbENMi2KIr2lIC2uRPRjSIlpoDxKf1mmO5zCc0uG0EfXClG3TheE6caoP1JmSBCP1mBbGMOop7MKYFtqFcUY/"
    "j+GMDme9qUgHUznH8RmYYPykz5+n/BTjX8Dwog4vee4Sc7/A0TK8zOiLPv0KpS8x+lUM0zpcNoY9utV2HNuplTYs04HXOJUsXGEq"
    "SV9lhqpcZSrXMMzqcN04zalsmS1IcSI5mGMiaV9EoiIZJiJjyOqQM856Ik57o1Q2caVuuSXcMisPrSooTMxfsztNp9ZZsrynr0CB"
    "6IcwzBP9mRmmewPDgg6LBtmLqPxAUmCJkyl6ay8pHallTyoPKyzqTT/q6zRqkUm+geGWDm8aCXIjCee4m02X5FM54dvO4Y56y9Ms"
    "wNt1byfdppoRLbwH72ghuqE0pnsHw7s6vNfehrvGEAHIQmCTHhBY9f5fSxr0+IC+DevePt6yWi45HPC+FnL9TXtvGz6od75L8OE2"
    "GOR72G275dSqFos3rrpD62Rj02v1yCM6gZKdI5p60GxtmLjku6nFaeGk/veQqNu3f/76CQ1Cr6PdplD+0M0/nCWzYdecDcvBalE+"
    "kaEwlCwNsPII/ggTi/CxAcbQSidA+SNsNWmxUYsLvfgejIaNccOiGXaXnpyn5zN6bIZhtMxVxbm0WrzRRwBfdhmhHXLtk4tMEl1c"
    "oYmsr6YXJskPk10SzfKJJLWYRM/gT/x2fqB+//w1tEYN4l38Fnm/jFosoN7nv0P9vfl+thb9uQd/uT9/Nqi//dslqwf/bJ/+dM2X"
    "qf/lH/Xve/DP/c/PX+nHPxZ4/pu//N7swT/fj//+Ctqn3rG1+09o8xno4n2T9y6oxcV+yo+3/0J+5Yv4/oP+81j6+9Ru9/M/gq51"
    "MnWK/5WThpIT1OmnL2r3utffCyhz2AC86btWyyYd4GOTvv2V7KpaTD3j00hL8/l8QUnLOVlW5jNpKZuV04o0XyjMZzK5bDaTzSk5"
    "WSnQlPqckU6SHEkvZYiG7eQMNszRp5KL77EiHWyAExz5ZQQd1WJFkWATm+Ib1wA6pnOKOsFGNMbpfB7Q6TRAEQ92jWEOPzeIhN4l"
    "ssEOwLNfi6wkssHqwbOTUYHNiGyw8vLsY5GVRTZYNQXfmMBmT575scjmRDZYrQTfuMAqIhusNoKvyOZFNlgVePbMkMAWRDZ4zkf4"
    "9Q2wR+zv4PG7wMHjCdSlMKxq0ejsQRmJXA8UL/7zmwj7/C5x0BaiXoeo+TNlb6iDUcaMePeze/8Fr2g3Lg=="
)
TORCH_LEGACY = (
    "eNp1lNlu00AUhr2kSWtoKUuBspY9YQl2EjsJSwqlFIq7uiy+QZbjDLEhtXPscRFIkXrTCngGHoCnQH0dHgGJC2Zsd0kwI9nWnJn5"
    "/nPG/8wm903o/Pk+93vq/Y+VyeImt/iLJ+8eMHl9nGGYru9hz/I6xgbyA8dzgSUT9FEy0nEw7iADuS3HdIH7ogskiD91kRE4n1EA"
    "fA8yeX2IBAPb8zEMqZzOk57jYsiqGT1DGZ7bhpyaCUOiaRGZDrIwUQmEZb+FfNSadSwsAFPQgM3rw2SFWPyInLaNgbOw51t20Qix"
    "0wkEw0fN0Om0DIzcwPONjZIAfD6v56g+mWm2EWTiJcJcxzPxWhwUYEgfI3PqlVK9VlcUpVyu1kuQjVK1uiHJLruEYXhVZVRO5bdh"
    "ROVVdhuErzbN6hCGwxqM6tkotaZjBjBmE107Yw9yxYqkwBE7p3KENx7xtuCoym7BsZh1HMMJDSaiMqXdMk/+S6vJkiyLSq0GpxLa"
    "6YQ2SWlnYtpZDOc0OB9lJsWZXUhlKXJNJJldTFhTCesSZV2OWVcwXNXgWrRMKvqh6zpu21hH5L9f/0+1FVkR4UbCzCfMAmXejJm3"
    "MNzW4E5kpX3mhulD8X/IqliBuwlSTJASRZZiZBlDRQNZn4iQbrhuNE1s2SgwsG9aH1ALlBid+GCBuG/PBtW+TamWynJJhBpRY4la"
    "nagVCrHKPQz3NXgQ+bf5juzcwz7oTOQuSdkDN/rBcpX6azop41FSxmNaxkws8ATDrAZP4/Pkm27Q9QKS+1yfzLy77+BnAwpluazA"
    "czt27jxV4FVuG16oLDWwGqssYFjUYCnswbI+QpaT34nNlolNWInGV/M6iTKg9WAtOkW7F8BLlQ10lvodXvXgtb3Xl+BND3TS54Iw"
    "aJID/ZZeIim2ZdP8x6XtP59WWSZtQ1NPWzbtaOfSnDqc5rURVOSY3bY5TZ/9ftzY5JtLvtmBMTqf3iTULENJn7adaWbnAIuyf2b7"
    "0Q0SI89OIx6fOqhNY43B3P4CwEtbmA=="
)


@pytest.mark.parametrize("encoded", [TORCH_ZIP, TORCH_LEGACY], ids=["zip", "legacy"])
def test_files_written_by_torch_read_back(encoded, tmp_path):
    path = tmp_path / "torch.pth"
    path.write_bytes(zlib.decompress(base64.b64decode("".join(encoded))))
    state = read_state_dict(path)
    assert list(state) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                           "1.num_batches_tracked", "bf16", "transposed"]
    np.testing.assert_array_equal(state["0.weight"], np.arange(6, dtype=np.float32).reshape(2, 3) / 8)
    np.testing.assert_array_equal(state["0.bias"], np.array([0.5, -0.25], np.float32))
    np.testing.assert_array_equal(state["1.weight"], [1, 1])
    np.testing.assert_array_equal(state["1.running_mean"], [0.125, 0.125])
    assert state["1.num_batches_tracked"].shape == () and state["1.num_batches_tracked"] == 7
    assert state["1.num_batches_tracked"].dtype == np.int64
    np.testing.assert_array_equal(state["bf16"], np.array([1.5, -2.0], np.float32))
    np.testing.assert_array_equal(state["transposed"], np.arange(6, dtype=np.int32).reshape(2, 3).T)
    assert {array.dtype for array in state.values()} == {np.dtype(np.float32), np.dtype(np.int64), np.dtype(np.int32)}
