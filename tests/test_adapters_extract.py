"""Extraction of adapters from full adaptations: the whole shift is kept, the error falls with the rank
to zero, stacks of extracted adapters add up, pairs that are not base + adaptation are refused.

The adaptations are real: the demo generator (32 px, trained) adapted by `nada.adapt` with the tiny
CLIP for 30 steps, training every layer including to-RGB, so that every kind of tensor changes.
"""

from __future__ import annotations

import functools

import pytest
import torch

import nada
from nada.adapters import (
    FORMAT_VERSION,
    Adapter,
    AdapterError,
    apply_adapters,
    extract_adapter,
    image_error,
    load_adapter,
    measure_shift,
    render_seeds,
    save_adapter,
)
from nada.cli import main
from nada.demo import DEMO_GENERATOR, load_tiny_clip
from nada.stylegan2.formats import save_generator


@functools.cache
def base() -> nada.Generator:
    return nada.load_generator(DEMO_GENERATOR)


@functools.cache
def adapted(target: str) -> nada.Generator:
    clip = load_tiny_clip()
    d = nada.text_direction(clip, "a photo", target, templates=None)
    cfg = nada.AdaptConfig(steps=30, layers="all_with_torgb", seed=0)
    return nada.adapt(base(), clip, d, cfg).generator


def test_every_changed_tensor_is_kept_and_the_error_falls_with_rank_to_zero():
    G, A = base(), adapted("a red sketch")
    shift = measure_shift(G, A)
    kinds = {n.rsplit(".", 1)[-1] for n in shift.deltas}
    assert {"const", "bias", "noise_strength", "weight"} <= kinds  # the run changed all of them
    reference = render_seeds(A)
    shifted = float((render_seeds(G) - reference).abs().mean())
    errors = []
    for rank in (1, 2, 4, 8, 16, 32, shift.full_rank):
        adapter = shift.adapter(rank)
        kept = {k.rsplit(".", 1)[0] for k in adapter.tensors}
        assert kept == set(shift.deltas), f"rank {rank} drops changed tensors"
        errors.append(image_error(G, adapter, reference))
    assert errors[0] < 0.5 * shifted  # rank 1 already keeps most of the shift
    for lower, higher in zip(errors, errors[1:]):
        assert higher <= lower * 1.05 + 1e-6, errors  # monotone up to 5 % wiggle
    assert errors[-2] < errors[0] / 10
    assert errors[-1] < 1e-5  # full rank: nothing factored, exact up to float rounding


def test_exact_extraction_and_the_adapter_is_smaller_at_lower_rank(tmp_path):
    G, A = base(), adapted("a red sketch")
    delta = extract_adapter(G, A)
    assert delta.kind == "delta"
    # base + (adapted - base) is the adapted weight up to one float rounding per element.
    torch.testing.assert_close(render_seeds(apply_adapters(G, [(delta, 1.0)])), render_seeds(A), atol=1e-5, rtol=0)
    sizes = [save_adapter(extract_adapter(G, A, rank=r), tmp_path / f"r{r}.safetensors").stat().st_size
             for r in (1, 4, 16)]  # fmt: skip
    full = save_adapter(delta, tmp_path / "delta.safetensors").stat().st_size
    assert sizes[0] < sizes[1] < sizes[2] < full


def test_a_stack_of_two_extracted_adapters_renders_close_to_both_full_deltas():
    G = base()
    a, b = adapted("a red sketch"), adapted("a blue circle")
    exact = apply_adapters(G, [(extract_adapter(G, a), 1.0), (extract_adapter(G, b), 1.0)])
    low = apply_adapters(G, [(extract_adapter(G, a, rank=16), 1.0), (extract_adapter(G, b, rank=16), 1.0)])
    reference = render_seeds(exact)
    stacked = float((render_seeds(low) - reference).abs().mean())
    singles = [image_error(G, extract_adapter(G, x, rank=16), render_seeds(x)) for x in (a, b)]
    moved = float((render_seeds(G) - reference).abs().mean())
    # Tolerance: the stack's error is about the sum of its members' errors, and far below the shift.
    assert stacked <= 1.5 * sum(singles) + 1e-4, (stacked, singles)
    assert stacked < 0.01 and moved > 10 * stacked


def test_max_error_picks_the_smallest_rank_that_reaches_it():
    G, A = base(), adapted("a red sketch")
    shift = measure_shift(G, A)
    reference = render_seeds(A)
    target = image_error(G, shift.adapter(6), reference) * 1.001
    adapter = extract_adapter(G, A, max_error=target)
    rank = adapter.metadata["rank"]
    assert adapter.metadata["image_error"]["value"] <= target
    assert image_error(G, shift.adapter(rank), reference) <= target
    assert rank <= 6 and image_error(G, shift.adapter(rank - 1), reference) > target
    with pytest.raises(AdapterError, match="positive image error"):
        extract_adapter(G, A, max_error=-1.0)


def published(G: nada.Generator) -> nada.Generator:
    """G as a published checkpoint: the weights only, no record of its base or prompts."""
    out = G.with_tensors()
    out.metadata = {}
    return out


def test_pairs_that_are_not_base_and_adaptation_are_refused():
    G, A = base(), adapted("a red sketch")
    with pytest.raises(AdapterError, match="different architectures"):
        extract_adapter(nada.Generator(nada.GeneratorConfig(img_resolution=16, channels=(32, 16, 8))), A)
    torch.manual_seed(3)
    unrelated = nada.Generator(G.config).eval()
    with pytest.raises(AdapterError, match=r"relative change 1\.\d\d"):
        extract_adapter(unrelated, published(A))
    with pytest.raises(AdapterError, match="identical weights"):
        extract_adapter(G, G)
    other = G.with_tensors({"synthesis.b4.const": G.synthesis.b4.const + 0.01})  # a near twin of the base
    with pytest.raises(AdapterError, match="made from another base"):
        extract_adapter(other, A)  # A's metadata names G's fingerprint


def test_names_from_prompts_files_and_arguments(tmp_path):
    G, A = base(), adapted("a red sketch")
    adapter = extract_adapter(G, A, rank=2)
    assert adapter.name == "a red sketch"
    assert extract_adapter(G, A, rank=2, name="pixar").name == "pixar"
    # An old file: no name, no prompts -> the file's name.
    old = Adapter("delta", dict(extract_adapter(G, A).tensors), {"base_fingerprint": "0" * 64})
    back = load_adapter(save_adapter(old, tmp_path / "ukiyoe.safetensors"))
    assert back.name == "ukiyoe"
    with pytest.raises(AdapterError, match="adapter 'ukiyoe' was trained on a different base"):
        apply_adapters(G, [(back, 1.0)])


def test_file_versions(tmp_path):
    from safetensors import safe_open

    G, A = base(), adapted("a red sketch")

    def version(adapter, name):
        path = save_adapter(adapter, tmp_path / name)
        with safe_open(str(path), "pt") as f:
            return int(f.metadata()["format_version"])

    assert version(extract_adapter(G, A, rank=2), "x.safetensors") == FORMAT_VERSION == 2  # has .delta entries
    assert version(extract_adapter(G, A), "d.safetensors") == 1  # readable by version-1 readers


def test_lora_and_modulation_cover_to_rgb_when_the_run_trains_it():
    from nada import layers
    from nada.adaptation.parameterizations import make_parameterization

    G = base()
    units = layers.resolve_units(G, "all_with_torgb")
    lora = make_parameterization("lora", G, units, rank=2).to_adapter()
    mod = make_parameterization("modulation", G, units).to_adapter()
    assert any(".torgb.weight.lora_A" in k for k in lora.tensors)
    assert any(".torgb.style_scale" in k for k in mod.tensors)


def test_cli_extracts_and_refuses_unrelated_pairs(tmp_path, capsys):
    G, A = base(), adapted("a red sketch")
    base_file = save_generator(G, tmp_path / "base.safetensors")
    adapted_file = save_generator(published(A), tmp_path / "sketch.safetensors")
    out = tmp_path / "sketch_adapter.safetensors"
    assert main(["extract-adapter", str(base_file), str(adapted_file), "--rank", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote adapter 'sketch'" in printed and "rank 4" in printed  # no prompts stored: the file's name
    assert load_adapter(out).metadata["rank"] == 4
    assert main(["extract-adapter", str(base_file), str(adapted_file), "--rank", "4", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    torch.manual_seed(3)
    unrelated = save_generator(nada.Generator(G.config), tmp_path / "other.safetensors")
    code = main(["extract-adapter", str(unrelated), str(adapted_file), "--out", str(tmp_path / "u.safetensors")])
    assert code == 2 and "relative change" in capsys.readouterr().err


def test_an_average_w_estimated_at_load_time_is_not_part_of_the_shift():
    G, A = base(), published(adapted("a red sketch"))
    estimated = A.with_tensors({"mapping.w_avg": A.mapping.w_avg + 0.5})
    estimated.metadata = {"w_avg": "estimated from 4096 seeded samples (the file has no average w)"}
    assert "mapping.w_avg" not in measure_shift(G, estimated).deltas
    assert "mapping.w_avg" in measure_shift(G, A.with_tensors({"mapping.w_avg": A.mapping.w_avg + 0.5})).deltas
