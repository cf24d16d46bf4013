"""A corpus of hostile checkpoint files, written here, each refused with FormatError before anything runs.

Every payload would create a marker file if it ran; after each load we assert the marker does not
exist. Payloads are placed at the top of the file, inside the persistence structures real StyleGAN
checkpoints have (NVIDIA `_parameters` / `_init_kwargs`, TensorFlow `variables` / `components`),
inside nested tensor storages (`torch.storage._load_from_bytes`), inside numpy object arrays, and in
each container (raw pickle as NVIDIA .pkl, torch zip data.pkl, legacy torch.save). Resource attacks
(huge pre-sized allocations, deep nesting) must end in FormatError too, quickly and without memory.
"""

from __future__ import annotations

import collections
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nada.errors import FormatError
from nada.stylegan2.formats import load_generator
from tests.robustness.robust_fixtures import (
    call,
    dict_of,
    finish,
    glob,
    peak_rss_bytes,
    raw_bytes,
    text,
    torch_legacy_save,
    torch_legacy_with,
    torch_zip_with,
    tuple_of,
)
from tests.stylegan2 import format_fixtures as ff
from tests.stylegan3.writers import make_stylegan3, stylegan3_pickle_bytes

pytestmark = pytest.mark.filterwarnings("ignore")


def payloads(marker: str) -> dict[str, bytes]:
    """Pickle bodies (no PROTO/STOP) that would create `marker` if executed."""
    touch_py = f"open({marker!r}, 'w').close()"
    shell = f"touch {marker}"
    legacy_hostile = torch_legacy_with(finish(call(glob("os", "system"), text(shell))))
    inner_pickle = finish(call(glob("builtins", "exec"), text(touch_py)))
    return {
        "os.system": call(glob("os", "system"), text(shell)),
        "posix.system": call(glob("posix", "system"), text(shell)),
        "builtins.exec": call(glob("builtins", "exec"), text(touch_py)),
        "builtins.eval": call(glob("builtins", "eval"), text(touch_py)),
        "__builtin__.eval": call(glob("__builtin__", "eval"), text(touch_py)),
        "subprocess.call": call(glob("subprocess", "call"), tuple_of(text("touch"), text(marker))),
        "subprocess.Popen": call(glob("subprocess", "Popen"), text(shell), b"\x88"),  # shell=True
        "importlib chain": call(
            call(glob("builtins", "getattr"), call(glob("importlib", "import_module"), text("os")), text("system")),
            text(shell),
        ),
        "getattr chain": call(
            call(glob("builtins", "getattr"), call(glob("builtins", "__import__"), text("os")), text("system")),
            text(shell),
        ),
        "torch.load": call(glob("torch", "load"), text(marker + ".src")),
        "torch.serialization.load": call(glob("torch.serialization", "load"), text(marker + ".src")),
        "numpy.load": call(glob("numpy", "load"), text(marker + ".npy"), b"\x88"),  # allow_pickle=True
        "pickle.loads nested": call(glob("pickle", "loads"), raw_bytes(inner_pickle)),
        "_pickle.loads nested": call(glob("_pickle", "loads"), raw_bytes(inner_pickle)),
        "storage bytes with legacy payload": call(glob("torch.storage", "_load_from_bytes"), raw_bytes(legacy_hostile)),
        "storage bytes with zip payload": call(
            glob("torch.storage", "_load_from_bytes"),
            raw_bytes(torch_zip_with(finish(call(glob("os", "system"), text(shell))))),
        ),
        "copyreg reconstructor": call(
            glob("copyreg", "_reconstructor"), glob("subprocess", "Popen"), glob("builtins", "object"), b"N"
        ),
        "rebuild_from_type foreign": call(
            glob("torch._tensor", "_rebuild_from_type_v2"),
            glob("os", "system"),
            glob("torch", "Tensor"),
            tuple_of(text(shell)),
            b"}",
        ),
        "numpy object dtype": call(glob("numpy", "dtype"), text("O"), b"\x89", b"\x88"),
        "numpy reconstruct of object array": (
            call(
                glob("numpy.core.multiarray", "_reconstruct"),
                glob("numpy", "ndarray"),
                tuple_of(b"K\x01"),
                raw_bytes(b"b"),
            )
            + tuple_of(
                b"K\x01",
                tuple_of(b"K\x01"),
                call(glob("numpy", "dtype"), text("O8"), b"\x89", b"\x88"),
                b"\x89",
                b"]" + call(glob("os", "system"), text(shell)) + b"a",
            )
            + b"b"
        ),
        "BUILD with foreign __setstate__": call(glob("argparse", "Namespace")) + dict_of(x=b"N") + b"b",
        "tf network with exec state": call(
            glob("copyreg", "_reconstructor"), glob("dnnlib.tflib.network", "Network"), glob("builtins", "object"), b"N"
        )
        + call(glob("builtins", "exec"), text(touch_py))
        + b"b",
    }


def in_structures(body: bytes) -> dict[str, bytes]:
    """`body` placed where real StyleGAN pickles keep their data."""
    persistent = glob("torch_utils.persistence", "_reconstruct_persistent_obj")

    def net(state: bytes) -> bytes:
        return call(
            persistent,
            dict_of(
                type=text("class"),
                version=b"K\x06",
                module_src=text("# src"),
                class_name=text("Generator"),
                state=state,
            ),
        )

    tf_net = call(
        glob("copyreg", "_reconstructor"), glob("dnnlib.tflib.network", "Network"), glob("builtins", "object"), b"N"
    )
    return {
        "top level G_ema": dict_of(G_ema=body),
        "nvidia _parameters": dict_of(
            G_ema=net(
                dict_of(
                    _parameters=call(glob("collections", "OrderedDict")) + text("weight") + body + b"s",
                    _buffers=b"}",
                    _modules=b"}",
                )
            )
        ),
        "nvidia _init_kwargs": dict_of(
            G_ema=net(dict_of(_init_kwargs=call(glob("dnnlib.util", "EasyDict")) + text("z_dim") + body + b"s"))
        ),
        "nvidia nested module": dict_of(
            G_ema=net(dict_of(_modules=dict_of(mapping=net(dict_of(_parameters=dict_of(w=body))))))
        ),
        "stylegan3 layer numpy attribute": dict_of(
            G_ema=net(
                dict_of(
                    _modules=dict_of(
                        synthesis=net(dict_of(_modules=dict_of(L0_36_512=net(dict_of(in_size=body, _buffers=b"}")))))
                    )
                )
            )
        ),
        "stylegan3 filter buffer": dict_of(
            G_ema=net(
                dict_of(
                    _modules=dict_of(
                        synthesis=net(
                            dict_of(_modules=dict_of(L0_36_512=net(dict_of(_buffers=dict_of(up_filter=body)))))
                        )
                    )
                )
            )
        ),
        "tf variables": tuple_of(
            tf_net + dict_of(name=text("G"), variables=b"]" + tuple_of(text("w"), body) + b"a") + b"b", b"N", b"N"
        ),
        "tf components": tuple_of(
            tf_net + dict_of(name=text("G"), components=dict_of(synthesis=body)) + b"b", b"N", b"N"
        ),
        "rosinality g_ema": dict_of(g_ema=dict_of(**{"style.1.weight": body}), latent_avg=body),
        "rosinality args": dict_of(g_ema=b"}", args=body),
    }


def corpus(marker: str):
    """(name, file bytes) for every payload x placement x container."""
    for pname, body in payloads(marker).items():
        for sname, structure in in_structures(body).items():
            pkl = finish(structure, protocol=2)
            yield f"pkl/{sname}/{pname}", pkl
            yield f"zip/{sname}/{pname}", torch_zip_with(pkl)
            yield f"legacy/{sname}/{pname}", torch_legacy_with(pkl)
        yield f"pkl-proto0/bare/{pname}", finish(body, protocol=0)
        yield f"pkl-proto4/bare/{pname}", finish(body, protocol=4)


class ObjReduce:
    """Pickled by the real pickler (not opcode by opcode): a reduce to `func(*args)`."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def pickled_by_python(marker: str):
    """Files written by pickle.dump / torch.save from Python objects carrying payloads."""
    import os
    import subprocess

    shell = f"touch {marker}"
    for name, obj in {
        "os.system": ObjReduce(os.system, shell),
        "exec": ObjReduce(exec, f"open({marker!r}, 'w').close()"),
        "subprocess.check_call": ObjReduce(subprocess.check_call, ["touch", marker]),
    }.items():
        persistence, util, EasyDict, Persistent = ff._nvidia_modules()
        G = ff.make_generator()
        net = ff.nvidia_state(G, Persistent, "Generator")
        net.state["_parameters"]["evil"] = obj
        net.state["_init_kwargs"] = EasyDict(z_dim=obj)
        with ff.fake_modules(**{"torch_utils.persistence": persistence, "dnnlib.util": util}):
            yield f"nvidia-writer/{name}", pickle.dumps({"G_ema": net, "G": net, "D": None}, protocol=4)
        network, Network = ff._tf_modules()
        mapping, synth, own = ff.tf_variables(G)
        synth["evil"] = obj
        comps = {"mapping": Network("G_mapping", mapping), "synthesis": Network("G_synthesis", synth)}
        Gs = Network("G", own, components=comps, static_kwargs={"resolution": 16})
        with ff.fake_modules(**{"dnnlib.tflib.network": network}):
            yield f"tf-writer/{name}", pickle.dumps((Gs, None, Gs), protocol=3)
        G3 = make_stylegan3()
        yield f"stylegan3-writer/{name}", stylegan3_pickle_bytes(G3, Path(marker + ".unused"), payload=obj)
        yield f"torch-zip-writer/{name}", _torch_save({"g_ema": {"style.1.weight": obj}, "latent_avg": None})
        yield f"torch-legacy-writer/{name}", torch_legacy_save({"g_ema": {"w": obj}})
        yield f"numpy-object-array/{name}", pickle.dumps({"G_ema": np.array([obj, 1], dtype=object)}, protocol=4)


def _torch_save(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def resource_attacks():
    """Files that ask for huge memory or deep recursion; they must fail fast with FormatError."""
    huge = 1 << 60
    yield "bytearray8 huge", finish(b"\x96" + huge.to_bytes(8, "little"), protocol=5)
    yield "binbytes8 huge", finish(b"\x8e" + huge.to_bytes(8, "little"), protocol=4)
    yield "binunicode8 huge", finish(b"\x8d" + huge.to_bytes(8, "little"), protocol=4)
    yield "binbytes huge", finish(b"B" + (2**31 - 1).to_bytes(4, "little"), protocol=3)
    yield (
        "numpy presized",
        finish(
            dict_of(
                G_ema=call(
                    glob("numpy.core.multiarray", "_reconstruct"),
                    glob("numpy", "ndarray"),
                    tuple_of(b"J" + (2**30).to_bytes(4, "little"), b"J" + (2**30).to_bytes(4, "little")),
                    raw_bytes(b"b"),
                )
            )
        ),
    )
    yield (
        "torch storage huge in zip",
        torch_zip_with(
            finish(
                dict_of(
                    g_ema=call(
                        glob("torch._utils", "_rebuild_tensor_v2"),
                        b"("
                        + text("storage")
                        + glob("torch", "FloatStorage")
                        + text("0")
                        + text("cpu")
                        + b"\x8a\x05"
                        + (2**36).to_bytes(5, "little")
                        + b"tQ",
                        b"K\x00",
                        tuple_of(b"\x8a\x05" + (2**36).to_bytes(5, "little")),
                        tuple_of(b"K\x01"),
                        b"\x89",
                        call(glob("collections", "OrderedDict")),
                    )
                )
            )
        ),
    )
    yield "deep list", finish(b"]" * 200_000 + b"a" * 199_999)
    yield "deep tuple1", finish(b"N" + b"\x85" * 200_000)
    yield (
        "deep dict in state",
        finish(
            dict_of(
                G_ema=call(
                    glob("torch_utils.persistence", "_reconstruct_persistent_obj"),
                    dict_of(
                        type=text("class"),
                        class_name=text("Generator"),
                        state=b"}" + (text("k") + b"}") * 50_000 + b"s" * 50_000,
                    ),
                )
            )
        ),
    )
    yield "long memo chain", finish(b"]" + b"\x94h\x00" * 10 + b"." * 0)
    big_set = b"\x8f(" + b"N" * 1000 + b"\x90"  # EMPTY_SET MARK ... ADDITEMS
    yield "persistent id", finish(text("x") + b"Q")
    yield "set of Nones", finish(big_set)


def _check(tmp_path, name: str, data: bytes, marker) -> None:
    f = tmp_path / "candidate.bin"
    f.write_bytes(data)
    t0 = time.perf_counter()
    try:
        load_generator(f)
    except FormatError:
        pass
    except BaseException as e:  # noqa: BLE001 - the test's point is that nothing else escapes
        pytest.fail(f"{name}: raised {type(e).__name__}: {e}")
    else:
        pytest.fail(f"{name}: loaded as a generator")
    assert time.perf_counter() - t0 < 10, f"{name}: took {time.perf_counter() - t0:.1f} s"
    assert not marker.exists(), f"{name}: the payload RAN"
    for sidecar in (".src", ".npy"):
        assert not marker.with_name(marker.name + sidecar).exists()


def test_hostile_corpus_is_refused_and_nothing_runs(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    # Targets for the torch.load / numpy.load payloads: hostile files they would execute if reached.
    (tmp_path / "PWNED.src.pt").write_bytes(b"")
    tried = 0
    for name, data in list(corpus(str(marker))) + list(pickled_by_python(str(marker))):
        _check(tmp_path, name, data, marker)
        tried += 1
    with capsys.disabled():
        print(f"\nhostile corpus: {tried} files tried, all refused with FormatError, no payload ran")
    assert tried >= 500


def test_resource_attacks_fail_fast_without_memory(tmp_path):
    marker = tmp_path / "PWNED"
    before = peak_rss_bytes()
    for name, data in resource_attacks():
        _check(tmp_path, name, data, marker)
    grown = peak_rss_bytes() - before
    assert grown < 300 * 2**20, f"peak memory grew by {grown / 2**20:.0f} MiB"


def test_refusals_name_the_global_and_say_refused(tmp_path):
    marker = str(tmp_path / "PWNED")
    bodies = payloads(marker)
    for container in ("pkl", "zip", "legacy"):
        structure = finish(dict_of(G_ema=bodies["os.system"], g_ema=bodies["os.system"]))
        data = {"pkl": structure, "zip": torch_zip_with(structure), "legacy": torch_legacy_with(structure)}[container]
        f = tmp_path / f"x.{container}"
        f.write_bytes(data)
        with pytest.raises(FormatError) as e:
            load_generator(f)
        msg = str(e.value)
        assert "os.system" in msg or "posix.system" in msg, (container, msg)
        assert "refused" in msg, (container, msg)
        assert "weights_only=False" not in msg  # torch's advice would tell users to run the payload


def test_benign_lookalikes_still_load(tmp_path):
    """The corpus's structures are real: the same containers with plain data load (no false refusals)."""
    G = ff.make_generator()
    ff.write_nvidia_pkl(G, tmp_path / "n.pkl")
    ff.write_tf_pkl(G, tmp_path / "t.pkl")
    (tmp_path / "s3.pkl").write_bytes(stylegan3_pickle_bytes(make_stylegan3(), tmp_path / "executed"))
    for name in ("n.pkl", "t.pkl", "s3.pkl"):
        loaded = load_generator(tmp_path / name)
        assert loaded.config.img_resolution == 16
    sd = collections.OrderedDict((k, v.clone()) for k, v in G.state_dict().items())
    (tmp_path / "legacy.pt").write_bytes(torch_legacy_save(sd))
    assert load_generator(tmp_path / "legacy.pt").config == G.config


def _expanded(n: int = 2**20) -> torch.Tensor:
    # 16 stored bytes declaring n*n values: zero strides (what torch.Tensor.expand saves).
    return torch.zeros(4).as_strided((n, n), (0, 0))


def strided_bombs():
    """Tiny files whose tensors declare ~10^12 values over a few stored bytes (overlapping strides):
    summing, converting or copying them would hang or exhaust memory."""
    G = ff.make_generator()
    sd = {k: v.clone() for k, v in G.state_dict().items()}
    key = "synthesis.b8.conv0.weight"
    yield "torch zip state dict", _torch_save({**sd, key: _expanded()})
    yield "torch legacy state dict", torch_legacy_save({**sd, key: _expanded()})
    rosi = {"g_ema": {"style.1.weight": _expanded(), "input.input": torch.zeros(1, 4, 4, 4)}, "latent_avg": _expanded()}
    yield "rosinality latent_avg", _torch_save(rosi)
    yield "nested deep in a checkpoint", _torch_save({"state_dict": {"module": {"g_ema": [{"w": _expanded()}]}}})
    persistence, util, EasyDict, Persistent = ff._nvidia_modules()
    net = ff.nvidia_state(G, Persistent, "Generator")
    net.state["_modules"]["synthesis"].state["_modules"]["b8"].state["_modules"]["conv0"].state["_parameters"][
        "weight"
    ] = _expanded()
    with ff.fake_modules(**{"torch_utils.persistence": persistence, "dnnlib.util": util}):
        yield "nvidia pkl parameter", pickle.dumps({"G_ema": net}, protocol=4)


def test_overlapping_stride_tensors_are_refused_fast(tmp_path):
    import signal

    def too_slow(signum, frame):
        raise TimeoutError("load_generator hung on an overlapping-stride tensor")

    old = signal.signal(signal.SIGALRM, too_slow)
    before = peak_rss_bytes()
    try:
        for name, data in strided_bombs():
            assert len(data) < 2_000_000, name
            signal.alarm(10)
            try:
                _check(tmp_path, name, data, tmp_path / "PWNED")
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert peak_rss_bytes() - before < 300 * 2**20


def _storage_pid(numel: int, legacy: bool) -> bytes:
    """A persistent id naming a FloatStorage of `numel` elements (the 6-tuple of the legacy format has
    a trailing view_metadata)."""
    return (
        b"("
        + text("storage")
        + glob("torch", "FloatStorage")
        + text("0")
        + text("cpu")
        + b"\x8a\x08"
        + numel.to_bytes(8, "little")
        + (b"N" if legacy else b"")
        + b"tQ"
    )


def _tensor_over(storage: bytes, numel: int) -> bytes:
    return call(
        glob("torch._utils", "_rebuild_tensor_v2"),
        storage,
        b"K\x00",
        tuple_of(b"\x8a\x08" + numel.to_bytes(8, "little")),
        tuple_of(b"K\x01"),
        b"\x89",
        call(glob("collections", "OrderedDict")),
    )


def unfilled_storages():
    """Files a few hundred bytes long whose storages are sized by a number in the file (up to 2^40
    floats): the legacy torch format allocates such storages before reading them (or never reads
    them); converting the weights would then touch gigabytes."""
    for numel in (2**26, 2**28, 2**33, 2**40):
        for key in ("synthesis.b4.const", "g_ema"):
            legacy = finish(dict_of(**{key: _tensor_over(_storage_pid(numel, True), numel)}))
            yield f"legacy {key} {numel}", torch_legacy_with(legacy)
            zipped = finish(dict_of(**{key: _tensor_over(_storage_pid(numel, False), numel)}))
            yield f"zip {key} {numel}", torch_zip_with(zipped)
        nested = torch_legacy_with(finish(_storage_pid(numel, True)))
        storage = call(glob("torch.storage", "_load_from_bytes"), raw_bytes(nested))
        yield (
            f"nvidia nested storage {numel}",
            finish(
                dict_of(
                    G_ema=call(
                        glob("torch_utils.persistence", "_reconstruct_persistent_obj"),
                        dict_of(
                            type=text("class"),
                            class_name=text("Generator"),
                            state=dict_of(_parameters=dict_of(w=_tensor_over(storage, numel))),
                        ),
                    )
                )
            ),
        )


def test_storages_larger_than_the_file_are_refused_without_touching_memory(tmp_path):
    before = peak_rss_bytes()
    n = 0
    for name, data in unfilled_storages():
        assert len(data) < 4096, name
        _check(tmp_path, name, data, tmp_path / "PWNED")
        n += 1
    assert n == 20
    assert peak_rss_bytes() - before < 200 * 2**20


def short_payloads():
    """Payloads shorter than 64 bytes (format detection reads the first 64 bytes of a pickle), using a
    marker file 'P' in the current folder so the whole pickle fits."""
    bodies = {
        "os.system": call(glob("os", "system"), text("touch P")),
        "posix.system": call(glob("posix", "system"), text("touch P")),
        "nt.system": call(glob("nt", "system"), text("touch P")),
        "exec": call(glob("builtins", "exec"), text("open('P','w')")),
        "eval": call(glob("builtins", "eval"), text("open('P','w')")),
        "subprocess.call": call(glob("subprocess", "call"), tuple_of(text("touch"), text("P"))),
        "pty.spawn": call(glob("pty", "spawn"), text("true")),
        "shutil": call(glob("shutil", "copy"), text("/etc/hostname"), text("P")),
        "pathlib": call(glob("pathlib", "Path"), text("P")) + b"\x94" + b"0" + b"h\x00",
    }
    for name, body in bodies.items():
        for protocol in (0, 2, 4):
            yield f"{name} p{protocol}", finish(body, protocol=protocol)
        # Right after a torch legacy magic number, where detection stops reading.
        yield f"{name} after magic", pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[:-1] + finish(body, protocol=0)


def test_short_payloads_do_not_run_during_format_detection(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "P"
    n = 0
    for name, data in short_payloads():
        if "after magic" not in name:
            assert len(data) <= 64, (name, len(data))
        _check(tmp_path, name, data, marker)
        n += 1
    assert n == 36


def test_numbers_in_names_and_configs_cannot_hang(tmp_path):
    """Numbers a file puts in names and configs (TensorFlow `ToRGB_lod<N>`, `<R>x<R>/`, NVIDIA
    `_init_kwargs` resolutions) are refused or fail fast, never computed with (2 ** N of a huge N)."""
    import signal

    G = ff.make_generator()
    cases = {}
    for label, key in (
        ("lod huge", "ToRGB_lod99999999999/weight"),
        ("lod 4000 digits", "ToRGB_lod" + "9" * 4000 + "/b"),
        ("res 2^200", f"{2**200}x{2**200}/Conv0_up/weight"),
        ("res 0", "0x0/Conv1/weight"),
    ):
        network, Network = ff._tf_modules()
        mapping, synth, own = ff.tf_variables(G)
        synth[key] = np.ones(3, np.float32)
        comps = {"mapping": Network("G_mapping", mapping), "synthesis": Network("G_synthesis", synth)}
        Gs = Network("G", own, components=comps, static_kwargs={"resolution": 16})
        with ff.fake_modules(**{"dnnlib.tflib.network": network}):
            cases[f"tf {label}"] = pickle.dumps((Gs, None, Gs), protocol=3)
    for label, value in (("2^62", 2**62), ("2^4000", 2**4000), ("0", 0), ("-16", -16), ("17", 17)):
        persistence, util, EasyDict, Persistent = ff._nvidia_modules()
        net = ff.nvidia_state(G, Persistent, "Generator")
        net.state["_init_kwargs"] = EasyDict(
            z_dim=16,
            c_dim=0,
            w_dim=16,
            img_resolution=value,
            img_channels=3,
            mapping_kwargs=EasyDict(num_layers=2),
            synthesis_kwargs=EasyDict(channel_base=value, channel_max=value),
        )
        with ff.fake_modules(**{"torch_utils.persistence": persistence, "dnnlib.util": util}):
            cases[f"nvidia resolution {label}"] = pickle.dumps({"G_ema": net}, protocol=4)

    def too_slow(signum, frame):
        raise TimeoutError("load_generator hung")

    old = signal.signal(signal.SIGALRM, too_slow)
    try:
        for name, data in cases.items():
            signal.alarm(10)
            try:
                f = tmp_path / "c.pkl"
                f.write_bytes(data)
                try:
                    load_generator(f)  # a consistent file may load: the declared numbers were ignored
                except FormatError:
                    pass
                except BaseException as e:  # noqa: BLE001 - a hang (TimeoutError) or any other type fails
                    pytest.fail(f"{name}: {type(e).__name__}: {e}")
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)


def test_storage_constructors_cannot_allocate_more_than_the_file(tmp_path):
    """`torch.FloatStorage(n)` called by the pickle allocates n values before reading anything; a
    300-byte file must not get gigabytes that converting the weights would touch."""
    before = peak_rss_bytes()
    for cls in ("FloatStorage", "DoubleStorage", "ByteStorage", "UntypedStorage"):
        for n in (2**20, 2**27, 2**31, 2**40, -1):
            size = b"\x8a\x08" + n.to_bytes(8, "little", signed=True)
            t = call(
                glob("torch._utils", "_rebuild_tensor_v2"),
                call(glob("torch", cls), size),
                b"K\x00",
                tuple_of(size),
                tuple_of(b"K\x01"),
                b"\x89",
                call(glob("collections", "OrderedDict")),
            )
            data = finish(
                dict_of(
                    G_ema=call(
                        glob("torch_utils.persistence", "_reconstruct_persistent_obj"),
                        dict_of(
                            type=text("class"),
                            class_name=text("Generator"),
                            state=dict_of(_parameters=dict_of(**{"mapping.fc0.weight": t})),
                        ),
                    )
                )
            )
            _check(tmp_path, f"{cls}({n})", data, tmp_path / "PWNED")
    assert peak_rss_bytes() - before < 100 * 2**20


def _deflated_zip(big: int) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    torch.save({"g_ema": {"w": torch.zeros(4)}}, buf)
    zin = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for item in zin.infolist():
            if item.filename.endswith("data/0"):
                z.writestr(item.filename, bytes(big), compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
            else:
                z.writestr(item, zin.read(item.filename))
    return out.getvalue()


def test_zip_bombs_are_refused_before_inflating(tmp_path):
    """A ~300 KB torch zip whose deflated entry expands to 300 MB (directly, and as a storage nested in
    an NVIDIA pickle) is refused without the memory."""
    bomb = _deflated_zip(300 * 2**20)
    assert len(bomb) < 2_000_000
    nested = finish(
        dict_of(
            G_ema=call(
                glob("torch_utils.persistence", "_reconstruct_persistent_obj"),
                dict_of(
                    type=text("class"),
                    class_name=text("Generator"),
                    state=dict_of(
                        _parameters=dict_of(w=call(glob("torch.storage", "_load_from_bytes"), raw_bytes(bomb)))
                    ),
                ),
            )
        )
    )
    before = peak_rss_bytes()
    for name, data in (("zip bomb", bomb), ("nested zip bomb", nested)):
        assert len(data) < 2_000_000, name
        f = tmp_path / "bomb.pt"
        f.write_bytes(data)
        with pytest.raises(FormatError, match="expands to"):
            load_generator(f)
    assert peak_rss_bytes() - before < 100 * 2**20
