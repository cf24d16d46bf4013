"""CLIP loading, preprocessing, precision and ensembles (nada.clip) on a micro CLIP the tests make."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import nada
from nada.clip import OPENAI_MEAN, OPENAI_STD, clip_preprocess, read_state_dict
from nada.errors import ClipError
from nada.templates import IMAGENET_TEMPLATES, PART_TEMPLATES, apply_templates, resolve_templates
from tests.clip_fixtures import MICRO_CONFIG, make_micro_clip, write_micro_clip

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    folder = tmp_path_factory.mktemp("micro_clip")
    config, weights, module = write_micro_clip(folder)
    return config, weights, module


@pytest.fixture(scope="module")
def clip(micro):
    config, weights, _ = micro
    return nada.load_clip(config, weights=weights)


def _images(seed: int, b: int = 2, h: int = 40, w: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


# -- loading -------------------------------------------------------------------------------------------


def test_config_and_safetensors_load_the_exact_model(micro, clip):
    config, weights, module = micro
    assert clip.image_size == (32, 32)
    assert clip.mean == OPENAI_MEAN and clip.std == OPENAI_STD  # no preprocess section: open_clip's default
    assert clip.precision == "fp32" and clip.dtype == torch.float32
    assert not clip.model.training
    assert not any(p.requires_grad for p in clip.model.parameters())
    assert clip.name == config.parent.name  # "config.json" says nothing; its folder names the model
    x = _images(0, h=32, w=32)
    with torch.no_grad():
        expected = F.normalize(module.encode_image(clip.preprocess(x)), dim=-1)
        tokens = open_clip_tokens(["a red circle", "blue"])
        expected_text = F.normalize(module.encode_text(tokens), dim=-1)
    torch.testing.assert_close(clip.encode_images(x), expected)
    torch.testing.assert_close(clip.encode_text(["a red circle", "blue"]), expected_text)
    assert clip.embed_dim == MICRO_CONFIG["embed_dim"]


def open_clip_tokens(texts):
    import open_clip

    return open_clip.SimpleTokenizer(context_length=MICRO_CONFIG["text_cfg"]["context_length"])(texts)


def test_plain_state_dict_file_with_wrapper_and_prefix_loads(micro, tmp_path, clip):
    config, _, module = micro
    path = tmp_path / "micro.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in module.state_dict().items()}}, path)
    other = nada.load_clip("micro", config=config, weights=path)
    assert other.name == "micro"
    x = _images(1, h=32, w=32)
    torch.testing.assert_close(other.encode_images(x), clip.encode_images(x))


def test_pretrained_argument_that_is_a_file_is_taken_as_weights(micro, clip):
    config, weights, _ = micro
    other = nada.load_clip(config, str(weights))
    assert other.source["weights"] == str(weights)


def test_open_clip_hub_config_layout_sets_mean_std_and_interpolation(micro, tmp_path):
    _, weights, _ = micro
    cfg = {
        "model_cfg": MICRO_CONFIG,
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear"},
    }
    path = tmp_path / "open_clip_config.json"
    path.write_text(json.dumps(cfg))
    c = nada.load_clip(path, weights=weights)
    assert c.mean == (0.5, 0.5, 0.5) and c.std == (0.25, 0.25, 0.25) and c.interpolation == "bilinear"
    x = torch.zeros(1, 3, 32, 32)  # grey 0.5 -> exactly 0 after this model's own normalisation
    assert c.preprocess(x).abs().max() == 0


def test_loading_never_executes_pickled_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": Evil()}, f)
    with pytest.raises(ClipError, match="safely"):
        read_state_dict(path)
    assert not marker.exists()


def test_weights_for_another_architecture_are_refused_with_the_reason(micro, tmp_path):
    config, _, module = micro
    sd = module.state_dict()
    sd.pop("logit_scale")
    sd["text_projection"] = torch.zeros(3, 3)
    path = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    with pytest.raises(ClipError, match="do not fit.*missing.*logit_scale.*another shape"):
        nada.load_clip(config, weights=path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "ViT-Nope-99", "pretrained": "openai"}, "unknown CLIP architecture"),
        ({"model": "ViT-B-32", "pretrained": "no-such-tag"}, "known tags: .*openai"),
        ({"model": "ViT-B-32"}, "no weights"),
        ({"model": "hf-hub:org/model"}, "schemas are not loaded"),
        ({"model": "ViT-B-32", "precision": "fp8"}, "precision"),
    ],
)
def test_bad_requests_raise_clip_error_without_downloading(kwargs, match):
    with pytest.raises(ClipError, match=match):
        nada.load_clip(**kwargs)


def test_custom_config_errors(micro, tmp_path):
    config, weights, _ = micro
    with pytest.raises(ClipError, match="tags exist only"):
        nada.load_clip(config, pretrained="openai")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"embed_dim": 8}))
    with pytest.raises(ClipError, match="lacks vision_cfg, text_cfg"):
        nada.load_clip(bad, weights=weights)
    with pytest.raises(ClipError, match="does not exist"):
        nada.load_clip(config, weights=tmp_path / "missing.safetensors")
    with pytest.raises(ClipError, match="unknown weights format"):
        nada.load_clip(config, weights=bad)


def test_loading_inside_inference_mode_gives_trainable_graph_tensors(micro):
    config, weights, _ = micro
    with torch.inference_mode():
        c = nada.load_clip(config, weights=weights)
    assert not any(p.is_inference() for p in c.model.parameters())
    x = _images(2, h=32, w=32).requires_grad_(True)
    c.encode_images(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# -- preprocessing --------------------------------------------------------------------------------------


def _normalised(x01: torch.Tensor, mean=OPENAI_MEAN, std=OPENAI_STD) -> torch.Tensor:
    return (x01 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_preprocess_of_model_sized_image_is_only_the_normalisation():
    x = _images(3, h=32, w=32) * 1.2  # overshoot is kept (no clamp), as in the official code
    torch.testing.assert_close(clip_preprocess(x, 32), _normalised((x + 1) / 2))


def test_preprocess_centre_crops_the_longer_side():
    x = _images(4, h=32, w=51)  # shorter side already 32: no resampling, crop columns 9..41
    out = clip_preprocess(x, 32)
    torch.testing.assert_close(out, _normalised((x[..., 9:41] + 1) / 2))
    y = _images(5, h=50, w=32)  # crop rows 9..41
    torch.testing.assert_close(clip_preprocess(y, 32), _normalised((y[..., 9:41, :] + 1) / 2))


def test_preprocess_downscale_is_antialiased_with_the_direct_formula():
    """Halving with antialiased bilinear = the triangle filter of support 2 px: taps (1, 3, 3, 1) / 8
    per axis (interior pixels; the border renormalises the clipped taps)."""
    x = _images(6, b=1, h=64, w=64)
    out = clip_preprocess(x, 32, mean=(0, 0, 0), std=(1, 1, 1), interpolation="bilinear")
    x01 = (x + 1) / 2
    k = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 4, 4)
    direct = F.conv2d(x01, kernel, stride=2, padding=1, groups=3)  # output i covers input 2i-1 .. 2i+2
    torch.testing.assert_close(out[..., 1:-1, 1:-1], direct[..., 1:-1, 1:-1], atol=1e-5, rtol=1e-5)
    # A plain (not antialiased) bilinear halving samples between two pixels only: different.
    plain = F.interpolate(x01, size=(32, 32), mode="bilinear", align_corners=False)
    assert (plain - out).abs().max() > 0.05


def test_preprocess_non_square_resize_then_crop():
    x = _images(7, b=1, h=48, w=80)  # s = 32/48 -> 32 x 53, crop columns 10..42
    out = clip_preprocess(x, 32)
    resized = F.interpolate((x + 1) / 2, size=(32, 53), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(out, _normalised(resized[..., 10:42]))


def test_preprocess_squash_and_longest_modes():
    x = _images(8, b=1, h=32, w=64)
    sq = clip_preprocess(x, 32, mean=(0, 0, 0), std=(1, 1, 1), resize_mode="squash")
    assert sq.shape == (1, 3, 32, 32)
    lg = clip_preprocess(x, 32, mean=(0, 0, 0), std=(1, 1, 1), resize_mode="longest", fill=0.25)
    assert lg.shape == (1, 3, 32, 32)
    assert torch.all(lg[..., :8, :] == 0.25) and torch.all(lg[..., 24:, :] == 0.25)


def test_preprocess_rejects_channels_last_with_a_hint():
    with pytest.raises(ClipError, match="permute"):
        clip_preprocess(torch.zeros(1, 32, 32, 3), 32)


def test_gradients_flow_from_embeddings_to_pixels(clip):
    x = _images(9, h=64, w=80).requires_grad_(True)
    e = clip.encode_images(x, batch_size=1)
    assert e.shape == (2, 16)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(2))
    e[:, 0].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# -- precision ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precision_matches_fp32_and_keeps_layernorm_in_fp32(micro, clip, precision, dtype):
    config, weights, _ = micro
    half = nada.load_clip(config, weights=weights, precision=precision)
    assert half.precision == precision and half.dtype == dtype
    assert half.model.visual.conv1.weight.dtype == dtype
    assert half.model.ln_final.weight.dtype == torch.float32
    x = _images(10, h=32, w=32)
    cos_img = F.cosine_similarity(half.encode_images(x), clip.encode_images(x))
    cos_txt = F.cosine_similarity(
        half.encode_text(["red", "a blue square"]), clip.encode_text(["red", "a blue square"])
    )
    assert cos_img.min() > 0.99 and cos_txt.min() > 0.99
    xg = x.clone().requires_grad_(True)
    out = half.encode_images(xg)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert xg.grad.dtype == torch.float32 and torch.isfinite(xg.grad).all()


def test_auto_precision_is_fp32_on_cpu(micro):
    config, weights, _ = micro
    assert nada.load_clip(config, weights=weights, precision="auto", device="cpu").precision == "fp32"


# -- ensembles ----------------------------------------------------------------------------------------------


def test_weight_zero_member_is_never_loaded(micro, tmp_path):
    config, weights, _ = micro
    missing = tmp_path / "not-there.safetensors"  # loading it would raise
    ens = nada.load_ensemble(
        [
            nada.ClipSpec(str(config), weights=str(weights), weight=1.0, name="a"),
            {"model": str(config), "weights": str(missing), "weight": 0.0, "name": "b"},
        ]
    )
    assert ens.names == ("a",)
    assert [m.weight for m in ens] == [1.0]
    with pytest.raises(ClipError, match="does not exist"):
        nada.load_ensemble([{"model": str(config), "weights": str(missing), "weight": 1.0}])


def test_clip_ensemble_drops_zero_weights_flattens_and_names_uniquely(micro, clip):
    config, weights, _ = micro
    other = nada.load_clip(config, weights=weights)  # same name as `clip`
    ens = nada.clip_ensemble([(clip, 1.0), (other, 0.5), (clip, 0.0)])
    assert [m.weight for m in ens] == [1.0, 0.5]
    assert ens.names == (clip.name, f"{clip.name}#2")
    nested = nada.clip_ensemble([(ens, 2.0), (clip, 1.0)])  # clip appears twice: weights add up
    assert [m.weight for m in nested] == [3.0, 1.0]
    assert nada.as_ensemble(clip).members[0].model is clip
    with pytest.raises(ClipError, match="every weight is 0"):
        nada.clip_ensemble([(clip, 0.0)])
    with pytest.raises(ClipError, match=">= 0"):
        nada.clip_ensemble([(clip, -1.0)])
    with pytest.raises(ClipError, match="unique"):
        nada.ClipEnsemble([nada.clip.ClipMember("x", 1.0, clip), nada.clip.ClipMember("x", 1.0, other)])


def test_on_same_device_is_identity(clip):
    assert clip.on("cpu") is clip
    ens = nada.as_ensemble(clip).on("cpu")
    assert ens.members[0].model is clip


def test_micro_module_is_what_the_fixture_says():
    assert make_micro_clip(0).visual.image_size == (32, 32)


# -- templates ------------------------------------------------------------------------------------------------


def test_templates():
    assert len(IMAGENET_TEMPLATES) == 79 and len(set(IMAGENET_TEMPLATES)) == 79
    assert "a photo of many {}." not in IMAGENET_TEMPLATES  # the one CLIP template NADA leaves out
    assert len(PART_TEMPLATES) == 15
    assert resolve_templates("imagenet") == IMAGENET_TEMPLATES
    assert resolve_templates("none") == ("{}",) and resolve_templates(None) == ("{}",)
    assert apply_templates("dog", ["a {} painting", "", "  art of a {}  "]) == ["a dog painting", "art of a dog"]
    assert apply_templates("dog", "a sketch of a {}.") == ["a sketch of a dog."]
    for bad, match in [("imagenett", "unknown templates"), (["no slot"], "exactly once"), (["", " "], "empty")]:
        with pytest.raises(ClipError, match=match):
            resolve_templates(bad)
