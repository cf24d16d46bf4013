"""Bad input through the node classes: each gives a message a ComfyUI user can act on (it names the
input and the fix) and leaves every input exactly as it was."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import nada

pytestmark = pytest.mark.filterwarnings("ignore")


def snap(obj) -> dict[str, torch.Tensor]:
    """Every tensor an input holds (module state, a direction's vectors, an image), cloned."""
    if isinstance(obj, torch.Tensor):
        return {"": obj.clone()}
    if isinstance(obj, torch.nn.Module):
        return {k: v.clone() for k, v in obj.state_dict().items()}
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if isinstance(v, dict):
                out.update({f"{f.name}.{k}": t.clone() for k, t in v.items() if isinstance(t, torch.Tensor)})
        return out
    if isinstance(getattr(obj, "model", None), torch.nn.Module):  # a ClipModel
        return snap(obj.model)
    members = getattr(obj, "members", None)
    if members is not None:
        return {f"{i}.{k}": v for i, m in enumerate(members) for k, v in snap(m.model).items()}
    raise TypeError(type(obj))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) or (a[k].isnan().all() and b[k].isnan().all()) for k in a
    )


def expect_error(call, *inputs, says: tuple[str, ...]):
    """Run `call` under inference_mode (as ComfyUI does); it must raise with every phrase of `says` in
    the message, and leave `inputs` bit-identical."""
    before = [snap(x) for x in inputs]
    with torch.inference_mode(), pytest.raises(Exception) as info:
        call()
    msg = str(info.value)
    assert type(info.value).__module__.split(".")[-2:] != ["torch", "nn"], msg
    for phrase in says:
        assert phrase.lower() in msg.lower(), f"{phrase!r} not in {msg!r}"
    assert "Traceback" not in msg and len(msg) < 400, msg
    assert "AdaptConfig" not in msg, f"the message names an engine field, not the node input: {msg!r}"
    for x, b in zip(inputs, before, strict=True):
        assert same(snap(x), b), f"an input changed: {type(x).__name__}"
    return msg


def node(pack, name):
    return pack.NODE_CLASS_MAPPINGS[name]()


ADAPT = dict(steps=1, learning_rate=0.002, layers="all", train_seed=0, preview_every=0, reuse_saved=False)


def test_prompts(pack, bridge, tiny_clip):
    enc = node(pack, "NADA_EncodePromptPair")
    for src, tgt, says in [
        ("", "sketch", ("source", "empty", "e.g.")),
        ("   ", "sketch", ("source", "empty")),
        ("photo", "", ("target", "empty")),
        ("photo", "photo", ("source and target", "same", "differ")),
    ]:
        expect_error(lambda s=src, t=tgt: enc.encode(tiny_clip, s, t, "none"), tiny_clip, says=says)
    expect_error(
        lambda: enc.encode(tiny_clip, "a", "b", "custom", "no placeholder"), tiny_clip, says=("custom templates", "{}")
    )


def test_target_images(pack, bridge, tiny_clip, tiny_generator):
    img = node(pack, "NADA_ImageDirection")
    empty = torch.zeros(0, 32, 32, 3)
    expect_error(
        lambda: img.encode(tiny_clip, empty, generator=tiny_generator, source_samples=2),
        tiny_clip,
        tiny_generator,
        empty,
        says=("target images", "at least one"),
    )
    good = torch.rand(2, 32, 32, 3)
    expect_error(
        lambda: img.encode(tiny_clip, good, source_images=empty),
        tiny_clip,
        good,
        empty,
        says=("source images", "at least one"),
    )
    five = torch.rand(2, 20, 20, 5)
    expect_error(
        lambda: img.encode(tiny_clip, five, generator=tiny_generator, source_samples=2),
        tiny_clip,
        five,
        says=("IMAGE", "[2, 20, 20, 5]"),
    )
    nan = torch.full((1, 32, 32, 3), float("nan"))
    expect_error(
        lambda: img.encode(tiny_clip, nan, generator=tiny_generator, source_samples=2),
        tiny_clip,
        nan,
        says=("not finite",),
    )
    expect_error(lambda: img.encode(tiny_clip, good), tiny_clip, good, says=("source_images", "generator"))


@pytest.mark.parametrize("shape", [(1, 7, 13, 3), (3, 1, 1, 3), (1, 300, 97, 3), (2, 33, 40, 4), (1, 16, 16, 1)])
def test_odd_image_sizes_work_and_change_nothing(pack, bridge, tiny_clip, tiny_generator, shape):
    """Odd sizes, alpha and grey images are valid ComfyUI images: they give a finite direction (a CLIP
    smaller than the image just resizes it)."""
    images = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    before = [snap(images), snap(tiny_clip), snap(tiny_generator)]
    with torch.inference_mode():
        (d,) = node(pack, "NADA_ImageDirection").encode(tiny_clip, images, generator=tiny_generator, source_samples=2)
    assert all(torch.isfinite(v).all() for v in d.vectors.values())
    assert [snap(images), snap(tiny_clip), snap(tiny_generator)][0].keys() == before[0].keys()
    assert same(snap(images), before[0]) and same(snap(tiny_clip), before[1]) and same(snap(tiny_generator), before[2])


def test_adapt_settings(pack, bridge, tiny_generator, tiny_clip, tiny_direction, tmp_path):
    ad = node(pack, "NADA_Adapt")
    ins = (tiny_generator, tiny_clip, tiny_direction)

    def run(**kw):
        return lambda: ad.adapt(tiny_generator, tiny_clip, tiny_direction, **{**ADAPT, **kw})

    expect_error(run(layers="auto", auto_k=64), *ins, says=("auto_k", "<= 5"))
    expect_error(run(steps=0), *ins, says=("steps", "at least 1"))
    expect_error(run(batch=0), *ins, says=("batch", "1..4096", "got 0"))
    expect_error(run(train_seed=-1), *ins, says=("train_seed", "0..", "got -1"))
    expect_error(run(train_seed=2**64), *ins, says=("train_seed", "0..", str(2**64)))
    expect_error(run(learning_rate=float("nan")), *ins, says=("learning_rate", "finite"))
    expect_error(run(layers="everything"), *ins, says=("layers", "'everything'", "auto"))
    # Nothing was written for runs that never started.
    assert not list((tmp_path / "output").rglob("*.safetensors"))
    assert not list((tmp_path / "output").rglob("*.nada-tmp"))


def test_nan_direction(pack, bridge, tiny_generator, tiny_clip, tiny_direction, tmp_path):
    bad = dataclasses.replace(
        tiny_direction, vectors={k: torch.full_like(v, float("nan")) for k, v in tiny_direction.vectors.items()}
    )
    ad = node(pack, "NADA_Adapt")
    expect_error(
        lambda: ad.adapt(tiny_generator, tiny_clip, bad, **ADAPT),
        tiny_generator,
        tiny_clip,
        bad,
        says=("direction", "NaN", "make it again"),
    )
    bad_target = dataclasses.replace(
        tiny_direction, targets={k: torch.full_like(v, float("inf")) for k, v in tiny_direction.targets.items()}
    )
    expect_error(
        lambda: ad.adapt(tiny_generator, tiny_clip, bad_target, **{**ADAPT, "layers": "auto"}),
        tiny_generator,
        tiny_clip,
        bad_target,
        says=("direction", "NaN or Inf"),
    )
    comb = node(pack, "NADA_CombineDirections")
    expect_error(lambda: comb.combine(bad, 1.0, tiny_direction, 1.0), bad, tiny_direction, says=("not finite",))
    assert not list((tmp_path / "output").rglob("*.safetensors"))


def test_seeds_out_of_range(pack, bridge, tiny_generator):
    sample = node(pack, "NADA_Sample")
    for seeds, says in [
        ("-5", ("seeds '-5'", "'0-7'")),
        (str(2**70), ("outside 0..2**64-1",)),
        ("", ("no seeds",)),
        ("1,x", ("seeds '1,x'", "'1,5,9'")),
    ]:
        expect_error(lambda s=seeds: sample.sample(tiny_generator, s, 0.7, "const"), tiny_generator, says=says)
    latent = node(pack, "NADA_LatentFromSeed")
    expect_error(lambda: latent.make(tiny_generator, "-1", 0.7), tiny_generator, says=("seeds '-1'",))


def _rewrite_header(path, edit) -> None:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    edit(header["__metadata__"], header)
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])


def test_generator_files_from_other_save_versions(pack, bridge, tiny_generator, tmp_path):
    """Older files of ours load (no version = format 1's predecessor, extra header keys ignored); newer
    or damaged descriptions are refused with the fix in the message."""
    folder = tmp_path / "models" / "stylegan"
    folder.mkdir(parents=True, exist_ok=True)
    save = nada.stylegan2.formats.save_generator
    load = node(pack, "NADA_LoadStyleGAN2")

    def variant(name, edit):
        p = folder / name
        save(tiny_generator, p)
        _rewrite_header(p, edit)
        return name

    ok = [
        variant("no_version.safetensors", lambda m, h: m.pop("format_version")),
        variant("extra_keys.safetensors", lambda m, h: m.update(saved_by="nada 0.0.1", future_thing="{}")),
        variant("no_metadata.safetensors", lambda m, h: m.pop("metadata")),
        variant("no_fingerprint.safetensors", lambda m, h: m.pop("fingerprint")),
    ]
    for name in ok:
        (G,) = load.load(name)
        assert same(snap(G), snap(tiny_generator)), name

    newer = variant("newer.safetensors", lambda m, h: m.update(format_version="7"))
    expect_error(lambda: load.load(newer), says=("newer", "update comfyui-nada"))
    broken = variant("broken_config.safetensors", lambda m, h: m.update(config="{not json"))
    expect_error(lambda: load.load(broken), says=("broken_config.safetensors", "invalid"))
    unknown_cfg = variant(
        "unknown_cfg.safetensors",
        lambda m, h: m.update(config=json.dumps({**json.loads(m["config"]), "style_mixer": 3})),
    )
    msg = expect_error(lambda: load.load(unknown_cfg), says=("unknown_cfg.safetensors",))
    assert "style_mixer" in msg
    renamed = variant(
        "renamed.safetensors", lambda m, h: h.update({"synthesis.b4.const_old": h.pop("synthesis.b4.const")})
    )
    expect_error(lambda: load.load(renamed), says=("renamed.safetensors", "missing", "synthesis.b4.const"))
