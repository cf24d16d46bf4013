"""Property-based fuzzing of adapter files: a damaged or hostile adapter either loads and applies to
a generator that renders finite images, or raises AdapterError; never another exception or a hang.

Mutations: byte level (shared with the generator fuzzing) and structure level (safetensors header
shapes, dtypes, offsets, the adapter's kind / format / metadata JSON; tensors with NaN, wrong shapes,
wrong ranks, other dtypes, dropped or extra entries), on a delta, a lora and a modulation adapter.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nada.adapters import Adapter, AdapterError, apply_adapters, extract_adapter, load_adapter, save_adapter
from tests.robustness.robust_fixtures import load_or_refuse
from tests.robustness.test_fuzz_formats import FAST, byte_mutation, safetensors_header_mutation
from tests.stylegan2 import format_fixtures as ff

pytestmark = pytest.mark.filterwarnings("ignore")

CASE_SECONDS = 10


@functools.cache
def base() -> tuple:
    G = ff.make_generator()
    G2 = G.with_tensors({n: p.detach() + 0.05 * torch.randn_like(p) for n, p in G.named_parameters()})
    affine_rows = {
        n.removesuffix(".affine.weight"): p.shape[0] for n, p in G.named_parameters() if n.endswith(".affine.weight")
    }
    adapters = {
        "delta": extract_adapter(G, G2),
        "lora": extract_adapter(G, G2, rank=2),
        "modulation": Adapter(
            "modulation",
            {f"{layer}.style_scale": 0.1 * torch.randn(rows) for layer, rows in sorted(affine_rows.items())},
            {"base_fingerprint": G.fingerprint()},
        ),
    }
    d = Path(tempfile.mkdtemp(prefix="nada-fuzz-adapter-"))
    files = {}
    for kind, a in adapters.items():
        files[kind] = save_adapter(a, d / f"{kind}.safetensors").read_bytes()
    return G, files, d


def outcome(data: bytes, label: str) -> str:
    G, _, d = base()
    f = d / "case.safetensors"
    f.write_bytes(data)

    def load_apply_render():
        G3 = apply_adapters(G, [(load_adapter(f), 1.0)])
        return G3(torch.randn(1, G.config.z_dim, generator=torch.Generator().manual_seed(0)), noise_mode="const")

    img = load_or_refuse(load_apply_render, AdapterError, label, CASE_SECONDS)
    if img is None:
        return "refused"
    assert torch.isfinite(img).all(), f"{label}: applied adapter renders non-finite pixels"
    return "ok"


def _set(key: str, values: list[str]):
    def mutate(draw, meta: dict) -> None:
        meta[key] = draw(st.sampled_from(values))

    return mutate


ADAPTER_METADATA_MUTATIONS = {
    "kind": _set("kind", ["lora", "delta", "modulation", "", "LORA", "x" * 300]),
    "format": _set("format", ["nada.generator", "", "nada.adapter2"]),
    "metadata": _set(
        "metadata",
        ["[]", "1", "null", '"x"', "{", '{"base_fingerprint": 5}', '{"base_fingerprint": null}', '{"name": [1, 2]}'],
    ),
}


def header_mutation(data: bytes):
    return safetensors_header_mutation(data, ADAPTER_METADATA_MUTATIONS)


@st.composite
def tensor_mutation(draw) -> tuple[str, bytes]:
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    kind = draw(st.sampled_from(["delta", "lora", "modulation"]))
    data = base()[1][kind]
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + n])["__metadata__"]
    tensors = dict(st_load(data))
    name = draw(st.sampled_from(sorted(tensors)))
    t = tensors[name]
    how = draw(st.sampled_from(["nan", "inf", "reshape", "rank", "dtype", "drop", "extra", "empty", "big"]))
    if how == "nan":
        t = t.clone().reshape(-1)
        t[0] = float("nan")
        tensors[name] = t.reshape(tensors[name].shape)
    elif how == "inf":
        tensors[name] = torch.full_like(t, float("inf"))
    elif how == "reshape":
        tensors[name] = t.reshape(-1)[: max(1, t.numel() - 1)].clone()
    elif how == "rank":
        tensors[name] = t.reshape(1, *t.shape, 1).clone()
    elif how == "dtype":
        tensors[name] = t.to(
            draw(st.sampled_from([torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.bool, torch.int64]))
        )
    elif how == "drop":
        del tensors[name]
    elif how == "extra":
        tensors[
            draw(
                st.sampled_from(
                    ["x", "mapping.fc0.weight", "synthesis.b4.conv1.weight.lora_A", "synthesis.b4.conv1.style_scale"]
                )
            )
        ] = torch.ones(3)
    elif how == "empty":
        tensors[name] = torch.zeros(0)
    else:
        tensors[name] = torch.zeros(t.shape[0] + 3, *t.shape[1:]) if t.ndim else torch.zeros(3)
    return f"{kind} {how} {name}", st_save(tensors, metadata=meta)


def _any_kind(mutation):
    return st.sampled_from(["delta", "lora", "modulation"]).flatmap(
        lambda k: mutation(base()[1][k]).map(lambda data: (k, data))
    )


@settings(max_examples=120, **FAST)
@given(_any_kind(byte_mutation))
def test_byte_mutations_of_adapters(case):
    kind, data = case
    outcome(data, f"{kind} bytes")


@settings(max_examples=120, **FAST)
@given(_any_kind(header_mutation))
def test_header_mutations_of_adapters(case):
    kind, data = case
    outcome(data, f"{kind} header")


@settings(max_examples=150, **FAST)
@given(tensor_mutation())
def test_tensor_mutations_of_adapters(case):
    label, data = case
    outcome(data, label)


def test_the_unmutated_adapters_apply():
    for kind, data in base()[1].items():
        assert outcome(data, kind) == "ok"


@pytest.mark.slow
@settings(max_examples=1500, **FAST)
@given(st.one_of(_any_kind(byte_mutation), _any_kind(header_mutation), tensor_mutation()))
def test_many_mutations_of_adapters(case):
    label, data = case
    outcome(data, f"slow {label}")
