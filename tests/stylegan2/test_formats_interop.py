"""More checkpoint-format tests: independent layout writers, w_avg estimation, legacy archives, damaged and hostile files."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from nada.errors import FormatError, NadaError
from nada.stylegan2 import Generator, GeneratorConfig
from nada.stylegan2.formats import detect_format, export_rosinality, load_generator, save_generator
from tests.stylegan2.checkpoint_writers import nvidia_pickle_bytes, rosinality_state_dict, tf_pickle_bytes

torch.set_num_threads(min(2, torch.get_num_threads()))


def make_generator(seed: int = 0, **overrides) -> Generator:
    kw = dict(img_resolution=16, channels=(32, 16, 8), z_dim=24, w_dim=24, mapping_layers=3)
    kw.update(overrides)
    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(**kw)).eval().requires_grad_(False)
    with torch.no_grad():  # non-trivial values everywhere (biases, noise strengths, w_avg start at 0)
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        G.mapping.w_avg.copy_(torch.randn(G.config.w_dim))
    return G


@pytest.fixture(scope="module")
def G() -> Generator:
    return make_generator()


def render(G: Generator, seed: int = 1, psi: float = 0.7) -> torch.Tensor:
    z = torch.randn(2, G.config.z_dim, generator=torch.Generator().manual_seed(seed))
    c = torch.eye(G.config.c_dim)[[0, 1]] if G.config.c_dim else None
    with torch.no_grad():
        return G(z, c, truncation_psi=psi, noise_mode="const")


def assert_same_tensors(A: Generator, B: Generator, atol: float = 0.0) -> None:
    a, b = A.state_dict(), B.state_dict()
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        if atol == 0:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


def assert_loaded_state(G: Generator) -> None:
    assert not G.training
    assert not any(p.requires_grad for p in G.parameters())


# ---------------------------------------------------------------------------------------------
# our .safetensors


def test_safetensors_round_trip_is_bit_exact_and_keeps_provenance(G, tmp_path):
    path = save_generator(G, tmp_path / "g.safetensors", metadata={"prompt": "photo -> sketch", "steps": 3})
    G2 = load_generator(path)
    assert_loaded_state(G2)
    assert G2.config == G.config
    assert_same_tensors(G, G2)
    assert torch.equal(render(G), render(G2))
    assert G2.metadata["prompt"] == "photo -> sketch" and G2.metadata["steps"] == 3
    assert G2.metadata["source_format"] == "nada-safetensors"
    assert G2.metadata["source_file"] == "g.safetensors"
    assert G2.fingerprint() == G.fingerprint()


def test_safetensors_fp16_save_halves_the_file(G, tmp_path):
    full = save_generator(G, tmp_path / "a.safetensors")
    half = save_generator(G, tmp_path / "b.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    G2 = load_generator(half)
    assert G2.mapping.fc0.weight.dtype == torch.float32
    torch.testing.assert_close(render(G2), render(G), atol=0.05, rtol=0)


def test_save_refuses_to_overwrite_and_leaves_no_temp_files(G, tmp_path):
    path = tmp_path / "g.safetensors"
    save_generator(G, path)
    before = path.read_bytes()
    other = make_generator(seed=5)
    with pytest.raises(NadaError, match="overwrite=True"):
        save_generator(other, path)
    with pytest.raises(NadaError, match="overwrite=True"):
        export_rosinality(other, path)
    assert path.read_bytes() == before
    save_generator(other, path, overwrite=True)
    assert path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors"]


# ---------------------------------------------------------------------------------------------
# rosinality .pt


def test_rosinality_export_matches_the_hand_built_layout_and_loads_back_exactly(G, tmp_path):
    path = export_rosinality(G, tmp_path / "g.pt")
    ckpt = torch.load(path, weights_only=True)
    assert sorted(ckpt) == ["g_ema", "latent_avg"]
    expected = rosinality_state_dict(G)
    assert sorted(ckpt["g_ema"]) == sorted(expected)
    for k, v in expected.items():
        assert ckpt["g_ema"][k].shape == v.shape and torch.equal(ckpt["g_ema"][k], v), k
    G2 = load_generator(path)
    assert_loaded_state(G2)
    assert G2.config == G.config
    assert_same_tensors(G, G2)
    assert torch.equal(render(G), render(G2))
    assert G2.metadata["source_format"] == "rosinality-pt"


def test_rosinality_training_checkpoint_with_args_namespace(G, tmp_path):
    args = argparse.Namespace(size=16, channel_multiplier=2, n_mlp=3, latent=24, ckpt=None, lr=0.002)
    ckpt = {
        "g_ema": rosinality_state_dict(G),
        "g": rosinality_state_dict(G),
        "d": {"convs.0.0.weight": torch.zeros(4, 3, 1, 1)},
        "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "params": [0, 1]}]},
        "d_optim": {"state": {}, "param_groups": []},
        "args": args,
        "latent_avg": G.mapping.w_avg.clone(),
    }
    path = tmp_path / "000100.pt"
    torch.save(ckpt, path)
    G2 = load_generator(path)
    assert_same_tensors(G, G2)
    assert G2.metadata["checkpoint"]["args"]["n_mlp"] == 3


def test_stylegan_nada_save_without_latent_avg_gets_a_deterministic_w_avg(G, tmp_path):
    path = tmp_path / "nada.pt"
    torch.save({"g_ema": rosinality_state_dict(G), "g_optim": {"state": {}, "param_groups": []}}, path)
    A, B = load_generator(path), load_generator(path)
    assert torch.equal(A.mapping.w_avg, B.mapping.w_avg)
    assert "estimated" in A.metadata["w_avg"]
    z = torch.randn(4096, G.config.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = G.mapping(z)[:, 0].mean(0)
    torch.testing.assert_close(A.mapping.w_avg, expected, atol=1e-5, rtol=0)
    # everything but w_avg is the file's
    assert torch.equal(render(A, psi=1.0), render(G, psi=1.0))


def test_bare_rosinality_state_dict_and_legacy_torch_serialization(G, tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(rosinality_state_dict(G), path, _use_new_zipfile_serialization=False)
    assert detect_format(path.read_bytes()) == "torch-legacy"
    G2 = load_generator(path)
    assert torch.equal(render(G2, psi=1.0), render(G, psi=1.0))


@pytest.mark.parametrize("size", [8, 32])
def test_rosinality_config_is_inferred_from_the_tensors(size, tmp_path):
    channels = {8: (16, 8), 32: (16, 16, 8, 4)}[size]
    G = make_generator(img_resolution=size, channels=channels, mapping_layers=2)
    path = export_rosinality(G, tmp_path / "g.pt")
    cfg = load_generator(path).config
    assert (cfg.img_resolution, cfg.channels, cfg.mapping_layers, cfg.z_dim) == (size, channels, 2, 24)


def test_rosinality_export_refuses_what_rosinality_cannot_represent(tmp_path):
    for G in (make_generator(architecture="resnet"), make_generator(conv_clamp=256.0), make_generator(c_dim=3)):
        with pytest.raises(FormatError, match="rosinality"):
            export_rosinality(G, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_rosinality_nonstandard_blur_kernel_is_refused(G, tmp_path):
    sd = rosinality_state_dict(G)
    sd["convs.0.conv.blur.kernel"] = torch.ones(4, 4)
    torch.save({"g_ema": sd}, tmp_path / "g.pt")
    with pytest.raises(FormatError, match="filter"):
        load_generator(tmp_path / "g.pt")


# ---------------------------------------------------------------------------------------------
# NVIDIA pickles (PyTorch and TensorFlow)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"architecture": "resnet", "conv_clamp": 256.0}, {"architecture": "orig", "c_dim": 3, "z_dim": 16}],
    ids=["skip", "resnet-clamp", "orig-conditional"],
)
def test_nvidia_pytorch_pickle_loads_every_tensor_exactly(overrides, tmp_path):
    G = make_generator(**overrides)
    marker = tmp_path / "executed"
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(nvidia_pickle_bytes(G, marker))
    G2 = load_generator(path)
    assert not marker.exists()
    assert_loaded_state(G2)
    assert G2.config == G.config
    assert_same_tensors(G, G2)
    assert torch.equal(render(G), render(G2))
    assert G2.metadata["source_format"] == "nvidia-pytorch-pkl"
    assert G2.metadata["nvidia"]["init_kwargs"]["img_resolution"] == 16


@pytest.mark.parametrize(
    "overrides",
    [{}, {"architecture": "resnet", "conv_clamp": 256.0, "mapping_layers": 2}, {"architecture": "orig", "c_dim": 3}],
    ids=["skip", "resnet-clamp", "orig-conditional"],
)
def test_nvidia_tensorflow_pickle_converts_to_the_same_generator(overrides, tmp_path):
    G = make_generator(**overrides)
    marker = tmp_path / "executed"
    path = tmp_path / "stylegan2-ffhq-config-f.pkl"
    path.write_bytes(tf_pickle_bytes(G, marker))
    G2 = load_generator(path)
    assert not marker.exists()
    assert_loaded_state(G2)
    assert G2.config == G.config
    # mod_bias is stored minus 1 in TF, so the affine biases round through float32 arithmetic
    assert_same_tensors(G, G2, atol=1e-6)
    torch.testing.assert_close(render(G2), render(G), atol=1e-5, rtol=0)
    assert G2.metadata["source_format"] == "nvidia-tf-pkl"


def test_tf_pickle_protocol_2_is_read(G, tmp_path):
    path = tmp_path / "old.pkl"
    path.write_bytes(tf_pickle_bytes(G, tmp_path / "executed", protocol=2))
    torch.testing.assert_close(render(load_generator(path)), render(G), atol=1e-5, rtol=0)


def test_nvidia_pickle_with_nan_weights_is_refused(tmp_path):
    G = make_generator()
    with torch.no_grad():
        G.synthesis.b8.conv1.weight[0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pkl"
    path.write_bytes(nvidia_pickle_bytes(G, tmp_path / "executed"))
    with pytest.raises(FormatError, match=r"synthesis\.b8\.conv1\.weight.*NaN"):
        load_generator(path)


# ---------------------------------------------------------------------------------------------
# hostile and damaged files


class CreateFile:
    """A classic pickle payload: calling `open(path, 'w')` at load time creates the file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


class RunCommand:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class NestedStorage:
    def __init__(self, data: bytes):
        self.data = data

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.data,))


def hostile_files(G: Generator, tmp_path: Path, marker: Path) -> dict[str, bytes]:
    files = {
        "nvidia-pytorch": nvidia_pickle_bytes(G, marker, payload=CreateFile(marker)),
        "nvidia-tensorflow": tf_pickle_bytes(G, marker, payload=CreateFile(marker)),
        "plain-pickle-os-system": pickle.dumps({"G_ema": RunCommand(marker)}),
    }
    # a payload nested in a tensor storage: NVIDIA pickles carry storages as bytes to be unpickled again
    files["nvidia-nested-storage"] = pickle.dumps(
        {"G_ema": NestedStorage(pickle.dumps(RunCommand(marker), protocol=2))}
    )
    buf = io.BytesIO()
    torch.save({"g_ema": rosinality_state_dict(G), "latent_avg": CreateFile(marker)}, buf)
    files["rosinality-pt"] = buf.getvalue()
    # a torch zip archive whose data.pkl is replaced by a payload
    good = io.BytesIO()
    torch.save({"g_ema": rosinality_state_dict(G)}, good)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good.getvalue())) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = pickle.dumps(RunCommand(marker), protocol=2)
            zout.writestr(item, data)
    files["torch-zip-hostile-data.pkl"] = out.getvalue()
    return files


def test_hostile_files_are_refused_and_run_nothing(G, tmp_path):
    marker = tmp_path / "pwned"
    files = hostile_files(G, tmp_path, marker)
    assert not marker.exists()
    for name, data in files.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(data)
        with pytest.raises(FormatError, match="refused|refuse") as e:
            load_generator(path)
        assert not marker.exists(), name
        msg = str(e.value)
        assert any(g in msg for g in ("builtins.open", "io.open", "posix.system", "os.system", "open", "system")), (
            name,
            msg,
        )


def test_pickle_with_foreign_global_names_it(G, tmp_path):
    path = tmp_path / "g.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Path("x")}))
    with pytest.raises(FormatError, match=r"pathlib\.\w*Path.*safety"):
        load_generator(path)


@pytest.mark.parametrize("kind", ["safetensors", "rosinality", "nvidia", "tf"])
def test_truncated_files_raise_our_error(G, tmp_path, kind):
    src = tmp_path / "full"
    if kind == "safetensors":
        save_generator(G, src)
    elif kind == "rosinality":
        export_rosinality(G, src)
    elif kind == "nvidia":
        src.write_bytes(nvidia_pickle_bytes(G, tmp_path / "executed"))
    else:
        src.write_bytes(tf_pickle_bytes(G, tmp_path / "executed"))
    data = src.read_bytes()
    for frac in (0.0, 0.001, 0.3, 0.9, 0.999):
        cut = tmp_path / "cut.bin"
        cut.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(FormatError):
            load_generator(cut)


def test_format_is_detected_by_content_not_extension(G, tmp_path):
    st = save_generator(G, tmp_path / "a.safetensors")
    pt = export_rosinality(G, tmp_path / "b.pt")
    renamed = {tmp_path / "model.pkl": st.read_bytes(), tmp_path / "model.safetensors": pt.read_bytes(),
               tmp_path / "model.pt": nvidia_pickle_bytes(G, tmp_path / "executed")}  # fmt: skip
    for path, data in renamed.items():
        path.write_bytes(data)
        assert_same_tensors(G, load_generator(path))
    assert detect_format(st.read_bytes()) == "safetensors"
    assert detect_format(pt.read_bytes()) == "torch-zip"
    assert detect_format(b"GIF89a....") == "unknown"
    text = tmp_path / "notes.pt"
    text.write_text("not a model")
    with pytest.raises(FormatError, match="not a generator file"):
        load_generator(text)
    with pytest.raises(FormatError, match="does not exist"):
        load_generator(tmp_path / "missing.pt")


def test_unrelated_checkpoints_say_what_was_found(tmp_path):
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "clf.pt")
    with pytest.raises(FormatError, match="not a StyleGAN2 generator"):
        load_generator(tmp_path / "clf.pt")
    sd = rosinality_state_dict(make_generator())
    sd["convs.0.conv.weight"] = sd["convs.0.conv.weight"][:, :, :5]
    torch.save({"g_ema": sd}, tmp_path / "bad.pt")
    with pytest.raises(FormatError, match="shape"):
        load_generator(tmp_path / "bad.pt")


def test_stylegan3_pickle_is_named_as_unsupported(tmp_path):
    G = make_generator()
    data = nvidia_pickle_bytes(G, tmp_path / "executed")
    # An SG3 generator has synthesis.input and layers L0_36_512, ...: rename one block to look like it.
    data = data.replace(b"b16", b"L0_")
    (tmp_path / "sg3.pkl").write_bytes(data)
    with pytest.raises(FormatError):
        load_generator(tmp_path / "sg3.pkl")


def test_rosinality_channel_table_is_recognised_and_a_custom_table_is_warned_about(G, tmp_path, caplog):
    from nada.stylegan2 import channels_rosinality
    from nada.stylegan2.formats.rosinality import rosinality_channel_multiplier

    for size, multiplier in ((256, 1), (1024, 2)):
        cfg = GeneratorConfig(img_resolution=size, channels=channels_rosinality(size, multiplier))
        assert rosinality_channel_multiplier(cfg) == multiplier
    assert rosinality_channel_multiplier(G.config) is None
    with caplog.at_level("WARNING", logger="nada.stylegan2.formats.rosinality"):
        export_rosinality(G, tmp_path / "custom.pt")
    assert "channel_multiplier" in caplog.text
    with pytest.raises(FormatError, match="not rosinality's table"):
        export_rosinality(G, tmp_path / "strict.pt", strict=True)
    assert not (tmp_path / "strict.pt").exists()
    with pytest.raises(FormatError, match="image channels"):
        export_rosinality(make_generator(img_channels=1), tmp_path / "gray.pt")


@pytest.mark.parametrize("kind", ["safetensors", "rosinality", "nvidia", "tf"])
def test_damaged_bytes_give_a_generator_or_our_error(G, tmp_path, kind):
    """Flipped bytes anywhere (headers, zip directory, pickle opcodes, tensor data): a load or FormatError."""
    import random

    marker = tmp_path / "executed"
    data = {
        "safetensors": lambda: save_generator(G, tmp_path / "a").read_bytes(),
        "rosinality": lambda: export_rosinality(G, tmp_path / "b").read_bytes(),
        "nvidia": lambda: nvidia_pickle_bytes(G, marker),
        "tf": lambda: tf_pickle_bytes(G, marker),
    }[kind]()
    rng = random.Random(kind)
    path = tmp_path / "damaged"
    for _ in range(40):
        b = bytearray(data)
        for _ in range(rng.choice([1, 2, 8])):
            # half the flips land in the first 4 KiB, where headers and pickle structure live
            b[rng.randrange(len(b)) if rng.random() < 0.5 else rng.randrange(min(len(b), 4096))] = rng.randrange(256)
        path.write_bytes(bytes(b))
        try:
            load_generator(path)
        except FormatError:
            pass
    assert not marker.exists()


def test_other_ways_people_store_a_generator(G, tmp_path):
    ros = rosinality_state_dict(G)
    w_plus_avg = G.mapping.w_avg[None].repeat(G.config.num_ws, 1).clone()
    cases = {
        "ddp.pt": {"g_ema": {f"module.{k}": v for k, v in ros.items()}, "latent_avg": G.mapping.w_avg.clone()},
        "psp.pt": {"state_dict": {**{f"decoder.{k}": v for k, v in ros.items()}, "encoder.conv.weight": torch.zeros(1)},
                   "opts": {"output_size": 16}, "latent_avg": w_plus_avg},
        "ours-state-dict.pt": {k: v.clone() for k, v in G.state_dict().items()},
    }  # fmt: skip
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        G2 = load_generator(tmp_path / name)
        assert_same_tensors(G, G2)
    bad = {"g_ema": ros, "latent_avg": torch.randn(G.config.num_ws, G.config.w_dim)}
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(FormatError, match="latent_avg"):
        load_generator(tmp_path / "bad.pt")
