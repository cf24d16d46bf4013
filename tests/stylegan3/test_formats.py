"""StyleGAN3 files: NVIDIA snapshots read as data, our .safetensors round trip, configs from kwargs and tensors."""

from __future__ import annotations

import pickle

import pytest
import torch

from nada.errors import ConfigError, FormatError
from nada.stylegan2.formats import export_rosinality, load_generator, save_generator
from nada.stylegan2.formats.safe_pickle import safe_load
from nada.stylegan3 import StyleGAN3Config, StyleGAN3Generator
from tests.stylegan2.checkpoint_writers import EasyDict, nvidia_pickle_bytes, stylegan3_repo_init_kwargs
from tests.stylegan2.format_fixtures import make_generator as make_stylegan2
from tests.stylegan3.writers import generator_init_kwargs, make_stylegan3, stylegan3_pickle_bytes

torch.set_num_threads(min(2, torch.get_num_threads()))


def render(G, seed: int = 1) -> torch.Tensor:
    z = torch.randn(2, G.config.z_dim, generator=torch.Generator().manual_seed(seed))
    c = torch.eye(G.config.c_dim)[[0, 1]] if G.config.c_dim else None
    with torch.no_grad():
        return G(z, c, truncation_psi=0.7)


def assert_same_weights(A, B) -> None:
    a, b = A.state_dict(), B.state_dict()
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    "variant, overrides",
    [("t", {}), ("r", {}), ("t", {"c_dim": 3}), ("t", {"conv_clamp": None}), ("r", {"img_resolution": 32})],
    ids=["t", "r", "t-conditional", "t-fp32-no-clamp", "r-32px"],
)
def test_nvidia_snapshot_loads_as_the_same_generator(tmp_path, variant, overrides):
    G = make_stylegan3(variant=variant, **overrides)
    marker = tmp_path / "executed"
    path = tmp_path / "network-snapshot-000100.pkl"
    path.write_bytes(stylegan3_pickle_bytes(G, marker))
    H = load_generator(path)
    assert not marker.exists()  # the embedded networks_stylegan3.py source never ran
    assert type(H) is StyleGAN3Generator and H.config == G.config
    assert_same_weights(G, H)  # G_ema, not the trained G (whose weights the writer shifted)
    assert torch.equal(render(H), render(G))
    assert H.metadata["source_format"] == "nvidia-pytorch-pkl"
    assert H.metadata["nvidia"]["class_name"] == "Generator"
    assert not H.training and not any(p.requires_grad for p in H.parameters())


def test_snapshot_holds_numpy_values_in_module_state(tmp_path):
    # NVIDIA's layers keep numpy arrays and float64 scalars as attributes; they unpickle as data
    raw = safe_load(stylegan3_pickle_bytes(make_stylegan3(), tmp_path / "executed"))
    layer = raw["G_ema"].state["_modules"]["synthesis"].state["_modules"]["L0_36_16"].state
    assert list(layer["in_size"]) == [36, 36] and float(layer["in_cutoff"]) == pytest.approx(2.0)


def test_config_without_init_kwargs_comes_from_the_tensors(tmp_path):
    # channel_base / channel_max are recovered from the layer channel counts
    for variant in ("t", "r"):
        G = make_stylegan3(variant=variant)
        path = tmp_path / f"{variant}.pkl"
        path.write_bytes(stylegan3_pickle_bytes(G, tmp_path / "executed", init_kwargs=EasyDict()))
        H = load_generator(path)
        assert H.config.variant == G.config.variant and H.config.conv_kernel == G.config.conv_kernel
        assert torch.equal(render(H), render(G))


def test_kwargs_that_contradict_the_tensors_are_refused(tmp_path):
    G = make_stylegan3()
    kwargs = generator_init_kwargs(G.config)
    kwargs["margin_size"] = 4  # other feature-map sizes than the tensors have
    path = tmp_path / "g.pkl"
    path.write_bytes(stylegan3_pickle_bytes(G, tmp_path / "executed", init_kwargs=kwargs))
    with pytest.raises(FormatError, match="stylegan3-t"):
        load_generator(path)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol_reads(tmp_path, protocol):
    G = make_stylegan3()
    path = tmp_path / "g.pkl"
    path.write_bytes(stylegan3_pickle_bytes(G, tmp_path / "executed", protocol=protocol))
    assert_same_weights(load_generator(path), G)


@pytest.mark.parametrize("variant", ["t", "r"])
def test_safetensors_round_trip_is_bit_exact(tmp_path, variant):
    G = make_stylegan3(variant=variant, c_dim=2)
    G = G.with_tensors({"synthesis.input.transform": torch.eye(3)})
    G.synthesis.set_transform(angle_deg=12, translate=(0.05, 0))  # the user transform is saved too
    G.metadata = {"note": "fixture"}
    p = save_generator(G, tmp_path / "g.safetensors")
    H = load_generator(p)
    assert type(H) is StyleGAN3Generator and H.config == G.config
    assert_same_weights(G, H)
    assert H.fingerprint() == G.fingerprint()
    assert torch.equal(render(H), render(G))
    assert H.metadata["note"] == "fixture"


def test_pickle_to_safetensors_keeps_the_fingerprint(tmp_path):
    G = make_stylegan3(variant="r")
    (tmp_path / "g.pkl").write_bytes(stylegan3_pickle_bytes(G, tmp_path / "executed"))
    H = load_generator(tmp_path / "g.pkl")
    K = load_generator(save_generator(H, tmp_path / "g.safetensors"))
    assert H.fingerprint() == K.fingerprint() == G.fingerprint()


def test_rosinality_export_is_refused_with_the_alternative(tmp_path):
    with pytest.raises(ConfigError, match="safetensors"):
        export_rosinality(make_stylegan3(), tmp_path / "g.pt")


def test_single_network_pickle_and_missing_layers_are_clear(tmp_path):
    G = make_stylegan3()
    data = safe_load(stylegan3_pickle_bytes(G, tmp_path / "executed"))
    layers = data["G_ema"].state["_modules"]["synthesis"].state["_modules"]
    del layers["L3_52_16" if "L3_52_16" in layers else sorted(layers)[4]]
    from nada.stylegan2.formats import nvidia

    with pytest.raises(FormatError, match="L0, L1"):
        nvidia.from_nvidia_pytorch(data)


def test_config_dict_round_trip_and_unknown_keys():
    cfg = StyleGAN3Config(img_resolution=32, use_radial_filters=True, conv_kernel=1, conv_clamp=None)
    assert StyleGAN3Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        StyleGAN3Config.from_dict({**cfg.to_dict(), "warp_drive": 1})
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_stylegan2_written_by_the_stylegan3_repository_still_loads(tmp_path):
    # networks_stylegan2.py has the same tensors; train.py passes the synthesis kwargs flat
    G = make_stylegan2(conv_clamp=256.0)
    path = tmp_path / "stylegan2-from-stylegan3-repo.pkl"
    path.write_bytes(nvidia_pickle_bytes(G, tmp_path / "executed", init_kwargs=stylegan3_repo_init_kwargs(G)))
    H = load_generator(path)
    assert not (tmp_path / "executed").exists()
    assert type(H).__name__ == "Generator" and H.config == G.config and H.config.conv_clamp == 256.0
    assert_same_weights(G, H)
    assert torch.equal(render(H), render(G))
