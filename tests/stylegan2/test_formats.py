"""Every format loads exactly, round-trips bit for bit, and nothing in a file is ever executed."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import zipfile

import pytest
import torch

from nada.errors import FormatError
from nada.stylegan2.formats import detect_format, export_rosinality, load_generator, save_generator
from tests.stylegan2.format_fixtures import make_generator, write_nvidia_pkl, write_tf_pkl


def same_tensors(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def render(G):
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(3))
    c = torch.eye(G.config.c_dim)[:2] if G.config.c_dim else None
    return G(z, c, truncation_psi=0.7, noise_mode="const")


def test_safetensors_round_trip_bit_for_bit(tmp_path):
    G = make_generator()
    G.metadata = {"prompts": ["photo", "sketch"]}
    p = save_generator(G, tmp_path / "g.safetensors", metadata={"note": "x"})
    H = load_generator(p)
    same_tensors(G, H)
    assert torch.equal(render(G), render(H))
    assert H.config == G.config and H.metadata["prompts"] == ["photo", "sketch"] and H.metadata["note"] == "x"
    assert not any(t.requires_grad for t in H.parameters()) and not H.training
    with pytest.raises(FileExistsError):
        save_generator(G, p)
    save_generator(G, p, overwrite=True)
    half = load_generator(save_generator(G, tmp_path / "h.safetensors", dtype=torch.float16))
    assert half.synthesis.b8.conv0.weight.dtype == torch.float32


@pytest.mark.parametrize(
    "kw", [dict(), dict(architecture="resnet", conv_clamp=256.0), dict(architecture="orig", c_dim=3)]
)
def test_safetensors_keeps_every_architecture(tmp_path, kw):
    G = make_generator(**kw)
    H = load_generator(save_generator(G, tmp_path / "g.safetensors"))
    assert H.config == G.config
    assert torch.equal(render(G), render(H))


def test_rosinality_export_and_load(tmp_path):
    G = make_generator(mapping_layers=3)
    p = export_rosinality(G, tmp_path / "g.pt")
    raw = torch.load(p, weights_only=True)
    g = raw["g_ema"]
    # rosinality's exact layout, including its fixed filter buffers.
    assert g["input.input"].shape == (1, 32, 4, 4)
    assert g["convs.0.conv.weight"].shape == (1, 16, 32, 3, 3) and "convs.0.conv.blur.kernel" in g
    assert "convs.1.conv.blur.kernel" not in g and "to_rgbs.0.upsample.kernel" in g
    assert g["to_rgb1.bias"].shape == (1, 3, 1, 1) and g["noises.noise_0"].shape == (1, 1, 4, 4)
    assert sorted(k for k in g if k.startswith("style.")) == [
        f"style.{i}.{w}" for i in (1, 2, 3) for w in ("bias", "weight")
    ]
    H = load_generator(p)
    same_tensors(G, H)
    assert torch.equal(render(G), render(H))
    assert H.metadata["source_format"] == "rosinality-pt"


def test_rosinality_checkpoint_with_args_namespace_and_optimizer(tmp_path):
    G = make_generator()
    export_rosinality(G, tmp_path / "a.pt")
    g_ema = torch.load(tmp_path / "a.pt", weights_only=True)["g_ema"]
    ckpt = {
        "g_ema": g_ema,
        "g": g_ema,
        "g_optim": {"state": {}, "param_groups": [{"lr": 0.002}]},
        "args": argparse.Namespace(size=16, channel_multiplier=2, iter=300),
    }
    torch.save(ckpt, tmp_path / "nada.pt")
    H = load_generator(tmp_path / "nada.pt")
    assert H.metadata["checkpoint"]["args"]["iter"] == 300
    # No latent_avg in the file: w_avg is estimated (deterministically) from the mapping.
    assert "estimated" in H.metadata["w_avg"]
    H2 = load_generator(tmp_path / "nada.pt")
    assert torch.equal(H.mapping.w_avg, H2.mapping.w_avg)
    for k in ("synthesis.b8.conv0.weight", "mapping.fc1.bias"):
        assert torch.equal(H.state_dict()[k], G.state_dict()[k])
    torch.save(g_ema, tmp_path / "bare.pt")
    assert torch.equal(load_generator(tmp_path / "bare.pt").synthesis.b16.torgb.weight, G.synthesis.b16.torgb.weight)


def test_rosinality_export_refuses_what_rosinality_cannot_hold(tmp_path):
    with pytest.raises(FormatError, match="cannot be written as a rosinality"):
        export_rosinality(make_generator(architecture="resnet"), tmp_path / "r.pt")
    assert not (tmp_path / "r.pt").exists()


@pytest.mark.parametrize(
    "kw", [dict(), dict(architecture="resnet", conv_clamp=256.0), dict(architecture="orig", c_dim=4)]
)
def test_nvidia_pytorch_pickle(tmp_path, kw):
    G = make_generator(**kw)
    write_nvidia_pkl(G, tmp_path / "g.pkl", conv_clamp=kw.get("conv_clamp"))
    H = load_generator(tmp_path / "g.pkl")
    assert H.config == G.config
    same_tensors(G, H)
    assert torch.equal(render(G), render(H))
    assert H.metadata["source_format"] == "nvidia-pytorch-pkl"


@pytest.mark.parametrize("kw", [dict(), dict(architecture="resnet")])
def test_nvidia_tensorflow_pickle(tmp_path, kw):
    G = make_generator(**kw)
    write_tf_pkl(G, tmp_path / "g.pkl")
    H = load_generator(tmp_path / "g.pkl")
    assert H.config == G.config
    same_tensors(G, H)
    assert torch.equal(render(G), render(H))
    assert H.metadata["source_format"] == "nvidia-tf-pkl"


def test_format_is_detected_by_content_not_extension(tmp_path):
    G = make_generator()
    p = save_generator(G, tmp_path / "looks_like.pkl")
    assert detect_format(p.read_bytes()) == "safetensors"
    same_tensors(load_generator(p), G)
    q = export_rosinality(G, tmp_path / "model.safetensors")
    assert detect_format(q.read_bytes()) == "torch-zip"
    same_tensors(load_generator(q), G)


class Payload:
    """Pickles to a call that would create a file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class EvalPayload:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (eval, (f"__import__('pathlib').Path({self.target!r}).touch()",))


def hostile_pickles(tmp_path):
    marker = tmp_path / "pwned"
    yield "raw dict", pickle.dumps({"G_ema": Payload(marker)}), marker
    yield "nested in state", pickle.dumps({"G_ema": {"_parameters": [Payload(marker)]}}), marker
    yield "eval global", pickle.dumps({"G_ema": EvalPayload(marker)}), marker
    yield "tf network state", pickle.dumps((EvalPayload(marker),), protocol=3), marker
    # A torch zip archive whose data.pkl carries the payload.
    buf = io.BytesIO()
    torch.save({"g_ema": {}}, buf)
    zin = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = pickle.dumps({"g_ema": Payload(marker)}, protocol=2)
            zout.writestr(item, data)
    yield "torch zip data.pkl", out.getvalue(), marker


def test_hostile_pickles_are_refused_and_nothing_runs(tmp_path):
    for name, data, marker in hostile_pickles(tmp_path):
        f = tmp_path / f"{name.replace(' ', '_')}.pkl"
        f.write_bytes(data)
        with pytest.raises(FormatError) as e:
            load_generator(f)
        assert not marker.exists(), f"{name}: the payload ran"
        assert "refused" in str(e.value) or "refuse" in str(e.value) or "safety" in str(e.value), (name, str(e.value))


def test_foreign_global_is_named(tmp_path):
    f = tmp_path / "g.pkl"
    f.write_bytes(pickle.dumps({"G_ema": Payload(tmp_path / "x")}))
    with pytest.raises(FormatError, match=r"posix\.system|os\.system"):
        load_generator(f)


@pytest.mark.parametrize("maker", ["safetensors", "rosinality", "nvidia", "tf"])
def test_truncated_files_give_our_error(tmp_path, maker):
    G = make_generator()
    p = tmp_path / "g"
    if maker == "safetensors":
        save_generator(G, p)
    elif maker == "rosinality":
        export_rosinality(G, p)
    elif maker == "nvidia":
        write_nvidia_pkl(G, p)
    else:
        write_tf_pkl(G, p)
    data = p.read_bytes()
    for cut in (0, 5, len(data) // 3, len(data) - 7):
        p.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            load_generator(p)


def test_other_bad_inputs(tmp_path):
    with pytest.raises(FormatError, match="does not exist"):
        load_generator(tmp_path / "missing.pt")
    with pytest.raises(FormatError, match="folder"):
        load_generator(tmp_path)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(FormatError, match="not a generator file"):
        load_generator(tmp_path / "text.pt")
    torch.save({"model": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(FormatError, match="not a StyleGAN2 generator checkpoint"):
        load_generator(tmp_path / "other.pt")
    G = make_generator()
    export_rosinality(G, tmp_path / "g.pt")
    ck = torch.load(tmp_path / "g.pt", weights_only=True)
    ck["g_ema"]["convs.0.conv.weight"][0, 0, 0, 0, 0] = float("nan")
    torch.save(ck, tmp_path / "nan.pt")
    with pytest.raises(FormatError, match="NaN"):
        load_generator(tmp_path / "nan.pt")
    ck = torch.load(tmp_path / "g.pt", weights_only=True)
    ck["g_ema"]["convs.1.conv.weight"] = torch.zeros(1, 16, 5, 3, 3)
    torch.save(ck, tmp_path / "shape.pt")
    with pytest.raises(FormatError, match="shape"):
        load_generator(tmp_path / "shape.pt")
