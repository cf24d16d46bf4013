"""Text, image and combined CLIP directions (nada.directions) against their formulas (nada-spec 2.5, 2.12)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nada
from nada.directions import combine_directions, generator_samples, image_direction, text_direction
from nada.errors import DirectionError
from nada.templates import IMAGENET_TEMPLATES, PART_TEMPLATES
from tests.clip_fixtures import write_micro_clip

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    a = write_micro_clip(tmp_path_factory.mktemp("a"), seed=0)
    b = write_micro_clip(tmp_path_factory.mktemp("b"), seed=1)
    return nada.load_clip(a[0], weights=a[1], name="A"), nada.load_clip(b[0], weights=b[1], name="B")


@pytest.fixture(scope="module")
def clip(clips):
    return clips[0]


@pytest.fixture(scope="module")
def ensemble(clips):
    return nada.clip_ensemble([(clips[0], 1.0), (clips[1], 0.5)])


def _n(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def _images(seed: int, b: int, size: int = 32) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_text_direction_is_the_spec_formula(clip):
    templates = ["a photo of a {}.", "a sketch of the {}.", "{} art"]
    d = text_direction(clip, "dog", "cat", templates=templates)
    # By hand: each prompt embedded and normalised on its own, differences averaged, renormalised.
    ts = torch.stack([_n(clip.encode_text([t.format("dog")])[0]) for t in templates])
    tt = torch.stack([_n(clip.encode_text([t.format("cat")])[0]) for t in templates])
    expected = _n((tt - ts).mean(0))
    torch.testing.assert_close(d.vectors["A"], expected)
    torch.testing.assert_close(d.targets["A"], _n(tt.mean(0)))
    torch.testing.assert_close(d.sources["A"], _n(ts.mean(0)))
    assert d.kind == "text"
    assert d.provenance["source"] == "dog" and d.provenance["templates"] == templates


def test_text_direction_without_templates_and_with_imagenet(clip):
    d = text_direction(clip, "red", "blue", templates="none")
    e = clip.encode_text(["red", "blue"])
    torch.testing.assert_close(d.vectors["A"], _n(e[1] - e[0]))
    assert d.provenance["templates"] == "none" and d.provenance["template_count"] == 1
    d79 = text_direction(clip, "red", "blue")
    assert d79.provenance["template_count"] == len(IMAGENET_TEMPLATES) == 79


def test_patch_directions_are_one_per_part_template(clip):
    d = text_direction(clip, "dog", "cat", templates="none")
    p = d.patch["A"]
    assert p.shape == (len(PART_TEMPLATES), 16)
    t = PART_TEMPLATES[3]
    e = clip.encode_text([t.format("dog"), t.format("cat")])
    torch.testing.assert_close(p[3], _n(e[1] - e[0]))


def test_one_vector_per_member(ensemble, clips):
    d = text_direction(ensemble, "dog", "cat", templates="none")
    assert d.names == ("A", "B")
    for name, c in zip(("A", "B"), clips):
        e = c.encode_text(["dog", "cat"])
        torch.testing.assert_close(d.vectors[name], _n(e[1] - e[0]))
    d.check(ensemble)
    only_a = text_direction(clips[0], "dog", "cat", templates="none")
    with pytest.raises(DirectionError, match="no vector for CLIP 'B'"):
        only_a.check(ensemble)


@pytest.mark.parametrize(
    ("source", "target", "match"),
    [
        ("photo", "photo", "same text"),
        ("Photo ", "photo", "same text"),
        ("a  red circle", "a red circle", "same text"),
        ("", "sketch", "source text is empty"),
        ("photo", "   ", "target text is empty"),
        ("photo", None, "must be a string"),
    ],
)
def test_bad_prompts_raise(clip, source, target, match):
    with pytest.raises(DirectionError, match=match):
        text_direction(clip, source, target)


def test_prompts_this_clip_cannot_tell_apart_raise_instead_of_nan(clip):
    # The micro CLIP's context is 16 tokens: texts that differ only after that embed identically.
    long = " ".join(["word"] * 20)
    with pytest.raises(DirectionError, match="zero or not finite"):
        text_direction(clip, long + " dog", long + " cat", templates="none")


def test_image_direction_formula_means_not_renormalised(clip):
    tgt = [_images(1, 1, 32)[0], _images(2, 1, 48)[0]]  # mixed sizes are fine
    src = _images(3, 4, 40)
    d = image_direction(clip, tgt, source=src)
    e_t = torch.cat([clip.encode_images(t[None]) for t in tgt]).mean(0)
    e_s = clip.encode_images(src).mean(0)
    torch.testing.assert_close(d.vectors["A"], _n(e_t - e_s))
    torch.testing.assert_close(d.targets["A"], _n(e_t))
    torch.testing.assert_close(d.patch["A"], _n(e_t - e_s)[None])
    assert d.provenance == {"target": "images", "target_count": 2, "source": "images", "source_count": 4}


def test_image_direction_accepts_pil_images(clip):
    from PIL import Image

    x = _images(4, 1, 32)[0]
    arr = ((x.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    pil = Image.fromarray(arr)
    from_pil = image_direction(clip, [pil], source=_images(5, 2))
    as_tensor = torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1
    from_tensor = image_direction(clip, as_tensor, source=_images(5, 2))
    torch.testing.assert_close(from_pil.vectors["A"], from_tensor.vectors["A"])


def _tiny_generator():
    torch.manual_seed(0)
    cfg = nada.GeneratorConfig(img_resolution=16, channels=(32, 32, 16), z_dim=32, w_dim=32, mapping_layers=2)
    return nada.Generator(cfg).eval().requires_grad_(False)


def test_image_direction_from_generator_samples(clip):
    G = _tiny_generator()
    tgt = _images(6, 3)
    d = image_direction(clip, tgt, source=G, source_samples=5)
    samples = generator_samples(G, 5)
    assert samples.shape == (5, 3, 16, 16)
    expected = _n(clip.encode_images(tgt).mean(0) - clip.encode_images(samples).mean(0))
    torch.testing.assert_close(d.vectors["A"], expected)
    assert d.provenance["source"] == "generator samples" and d.provenance["source_count"] == 5
    again = image_direction(clip, tgt, source=G, source_samples=5)  # seeds 0..4: deterministic
    torch.testing.assert_close(again.vectors["A"], d.vectors["A"], rtol=0, atol=0)
    by_callable = image_direction(clip, tgt, source=lambda n: generator_samples(G, n), source_samples=5)
    torch.testing.assert_close(by_callable.vectors["A"], d.vectors["A"])


def test_image_direction_errors(clip):
    x = _images(7, 2)
    with pytest.raises(DirectionError, match="needs a source"):
        image_direction(clip, x)
    with pytest.raises(DirectionError, match="no images"):
        image_direction(clip, [], source=x)
    with pytest.raises(DirectionError, match="no images"):
        image_direction(clip, x[:0], source=x)
    with pytest.raises(DirectionError, match="permute"):
        image_direction(clip, torch.zeros(2, 32, 32, 3), source=x)
    with pytest.raises(DirectionError, match="zero or not finite"):
        image_direction(clip, x, source=x.clone())


def test_combine_is_the_weighted_sum_renormalised(ensemble):
    a = text_direction(ensemble, "dog", "cat", templates="none")
    b = text_direction(ensemble, "photo", "sketch", templates="none")
    c = combine_directions([(a, 1.0), (b, 0.5), (a, 0.0)])
    for n in ("A", "B"):
        torch.testing.assert_close(c.vectors[n], _n(a.vectors[n] + 0.5 * b.vectors[n]))
        torch.testing.assert_close(c.targets[n], _n(a.targets[n] + 0.5 * b.targets[n]))
        assert c.patch[n].shape == (15, 16)
    assert c.kind == "combined" and [p["weight"] for p in c.provenance["parts"]] == [1.0, 0.5]
    # A negative weight moves away: its source and target swap roles.
    neg = combine_directions([(a, -1.0)])
    torch.testing.assert_close(neg.vectors["A"], -a.vectors["A"])
    torch.testing.assert_close(neg.targets["A"], a.sources["A"])


def test_combine_errors(ensemble, clips):
    a = text_direction(ensemble, "dog", "cat", templates="none")
    with pytest.raises(DirectionError, match="cancel out"):
        combine_directions([(a, 1.0), (a, -1.0)])
    with pytest.raises(DirectionError, match="nonzero weight"):
        combine_directions([(a, 0.0)])
    with pytest.raises(DirectionError, match="different CLIP models"):
        combine_directions([(a, 1.0), (text_direction(clips[0], "dog", "cat", templates="none"), 1.0)])
    with pytest.raises(DirectionError, match="finite"):
        combine_directions([(a, float("nan"))])


def test_combining_text_and_image_directions_uses_the_direction_for_patches(clip):
    t = text_direction(clip, "dog", "cat", templates="none")
    i = image_direction(clip, _images(8, 2), source=_images(9, 2))
    c = combine_directions([(t, 1.0), (i, 1.0)])
    torch.testing.assert_close(c.patch["A"], c.vectors["A"][None])


def test_directions_made_in_inference_mode_work_in_a_training_graph(clip):
    with torch.inference_mode():
        d = text_direction(clip, "dog", "cat", templates="none")
        i = image_direction(clip, _images(10, 2), source=_images(11, 2))
    for v in (d.vectors["A"], d.targets["A"], d.patch["A"], i.vectors["A"]):
        assert not v.is_inference() and v.dtype == torch.float32 and v.device.type == "cpu"
    x = _images(12, 2).requires_grad_(True)
    loss = (1 - F.cosine_similarity(clip.encode_images(x), d.vectors["A"][None])).mean()
    loss.backward()
    assert torch.isfinite(x.grad).all()
