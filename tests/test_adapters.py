"""Adapters: apply at strength 1 = the adapted generator, strength 0 = the base, files round-trip."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from nada.adaptation.parameterizations import make_parameterization
from nada.adapters import (
    Adapter,
    AdapterError,
    apply_adapters,
    extract_adapter,
    load_adapter,
    save_adapter,
)
from nada.stylegan2 import Generator, GeneratorConfig

CFG = GeneratorConfig(img_resolution=16, channels=(32, 16, 8), z_dim=8, w_dim=8, mapping_layers=2)


def base_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(CFG).eval().requires_grad_(False)


def trainable_names(G):
    return [n for n, _ in G.named_parameters() if n.startswith("synthesis.") and ".torgb" not in n]


def trained(kind, G, seed=1):
    """A parameterisation with non-zero learned tensors, as after some training steps."""
    p = make_parameterization(kind, G, trainable_names(G), rank=2, seed=0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in p.parameters():
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return p


def render(G, overrides=None):
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(7))
    if overrides is None:
        return G(z)
    return functional_call(G, overrides, (z,))


@pytest.mark.parametrize("kind", ["lora", "modulation"])
def test_strength_one_is_the_trained_generator_and_zero_the_base(kind):
    G = base_generator()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    p = trained(kind, G)
    adapter = p.to_adapter({"base_fingerprint": G.fingerprint()})
    with torch.no_grad():
        want = render(G, p.overrides(G))
    assert torch.equal(render(apply_adapters(G, [(adapter, 1.0)])), want)
    assert torch.equal(render(apply_adapters(G, [(adapter, 0.0)])), render(G))
    assert not torch.equal(want, render(G))
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k]), f"base tensor {k} changed"


def test_stacking_is_linear_in_strength():
    G = base_generator()
    a = trained("lora", G, seed=1).to_adapter()
    b = trained("lora", G, seed=2).to_adapter()
    ab = apply_adapters(G, [(a, 0.5), (b, -1.5)])
    name = "synthesis.b8.conv0.weight"
    da = a.updates(G)[0][name]
    db = b.updates(G)[0][name]
    got = dict(ab.named_parameters())[name]
    torch.testing.assert_close(got, dict(G.named_parameters())[name] + 0.5 * da - 1.5 * db)


def test_apply_shares_untouched_tensors():
    G = base_generator()
    H = apply_adapters(G, [(trained("modulation", G).to_adapter(), 1.0)])
    assert H.synthesis.b8.conv0.weight.data_ptr() == G.synthesis.b8.conv0.weight.data_ptr()
    assert H.synthesis.b8.conv0.affine.weight.data_ptr() != G.synthesis.b8.conv0.affine.weight.data_ptr()


def test_wrong_base_is_refused_with_a_clear_message():
    G = base_generator()
    adapter = trained("lora", G).to_adapter({"base_fingerprint": "0" * 64, "name": "sketch"})
    with pytest.raises(AdapterError, match="different base generator"):
        apply_adapters(G, [(adapter, 1.0)])
    apply_adapters(G, [(adapter, 1.0)], check_base=False)


@pytest.mark.parametrize("kind", ["lora", "modulation"])
def test_file_round_trip(tmp_path, kind):
    G = base_generator()
    adapter = trained(kind, G).to_adapter({"base_fingerprint": G.fingerprint(), "target": "sketch"})
    path = save_adapter(adapter, tmp_path / "a.safetensors")
    back = load_adapter(path)
    assert back.kind == kind and back.metadata == adapter.metadata
    assert all(torch.equal(back.tensors[k], adapter.tensors[k]) for k in adapter.tensors)
    with pytest.raises(FileExistsError):
        save_adapter(adapter, path)


def test_extract_delta_reproduces_the_adapted_generator_and_lora_extraction_approximates():
    G = base_generator()
    p = trained("lora", G)
    with torch.no_grad():
        adapted = G.with_tensors({k: v.detach() for k, v in p.overrides(G).items()})
    delta = extract_adapter(G, adapted)
    assert delta.kind == "delta"
    # base + (adapted - base) is adapted only to within an ulp per weight: float noise, not bits.
    torch.testing.assert_close(render(apply_adapters(G, [(delta, 1.0)])), render(adapted), rtol=1e-5, atol=1e-5)
    # The true change is rank 2, so a rank-2 extraction recovers it up to float error.
    low = extract_adapter(G, adapted, rank=2)
    torch.testing.assert_close(render(apply_adapters(G, [(low, 1.0)])), render(adapted), atol=1e-4, rtol=1e-4)


def test_not_an_adapter_file(tmp_path):
    from safetensors.torch import save_file

    f = tmp_path / "gen.safetensors"
    save_file({"x": torch.zeros(2)}, str(f))
    with pytest.raises(AdapterError, match="not a NADA adapter"):
        load_adapter(f)
    g = tmp_path / "junk.safetensors"
    g.write_bytes(b"\x00" * 3)
    with pytest.raises(AdapterError, match="not a readable"):
        load_adapter(g)
    with pytest.raises(AdapterError, match="unknown adapter kind"):
        Adapter("magic", {})


def test_public_functions_are_not_shadowed_by_modules():
    import nada
    import nada.adaptation.config  # noqa: F401  (importing submodules must not rebind the functions)
    import nada.sampling  # noqa: F401
    from nada.adaptation import adapt
    from nada.sampling import sample

    assert nada.adapt is adapt and nada.sample is sample
    G = base_generator()
    assert torch.equal(nada.sample(G, [0, 1]), sample(G, [0, 1]))


def test_a_finite_but_absurd_value_is_refused_not_rendered_as_nan(tmp_path):
    """Found by the byte-mutation fuzzing: one style scale of 2.4e38 (finite) overflowed the render to NaN."""
    G = base_generator()
    adapter = trained("modulation", G).to_adapter({"base_fingerprint": G.fingerprint()})
    key = sorted(adapter.tensors)[0]
    adapter.tensors[key][0] = 2.4e38
    path = save_adapter(adapter, tmp_path / "bad.safetensors")
    with pytest.raises(AdapterError, match=f"tensor {key} holds values up to 2.4e\\+38.*corrupt"):
        load_adapter(path)


def test_every_name_of_the_first_release_is_still_public():
    import nada

    released = (
        "AdaptConfig AdaptError AdaptProgress Adapter AdapterError ClipEnsemble ClipModel ClipSpec ConfigError "
        "FormatError Direction Generator GeneratorConfig NadaError __version__ adapt apply_adapters as_ensemble "
        "blend_generators clip_ensemble combine_directions export_rosinality extract_adapter image_direction "
        "interpolate load_adapter load_clip load_ensemble load_generator save_adapter sample save_generator "
        "seed_to_z text_direction"
    ).split()
    assert set(released) <= set(nada.__all__)
    assert all(hasattr(nada, name) for name in nada.__all__)
