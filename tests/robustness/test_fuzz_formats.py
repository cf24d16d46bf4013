"""Property-based fuzzing of load_generator: mutated checkpoints of every format either load as a
usable (finite) generator or raise FormatError; never another exception, a hang or a huge allocation.

Mutations: byte level (truncation, flipped bytes, overwritten / inserted / deleted spans, zip
central-directory damage) on each format, and structure level (safetensors header: shapes, dtypes,
data offsets, declared config such as a huge resolution; tensors: wrong shapes and dtypes, NaN/Inf,
missing and extra entries). The default run is a few hundred cases; the slow variant thousands.
"""

from __future__ import annotations

import functools
import io
import json
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nada.errors import FormatError
from nada.stylegan2.formats import export_rosinality, load_generator, save_generator
from tests.robustness.robust_fixtures import load_or_refuse, peak_rss_bytes, torch_legacy_save
from tests.stylegan2 import format_fixtures as ff
from tests.stylegan3.writers import make_stylegan3, stylegan3_pickle_bytes

pytestmark = pytest.mark.filterwarnings("ignore")

CASE_SECONDS = 10  # a single load taking longer counts as a hang
MEMORY_BUDGET = 400 * 2**20  # peak RSS growth allowed over a whole fuzz test
FAST = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))
COUNTS: dict[str, int] = {}


@functools.cache
def base_files() -> dict[str, bytes]:
    G = ff.make_generator()
    d = Path(tempfile.mkdtemp(prefix="nada-fuzz-"))
    save_generator(G, d / "g.safetensors")
    export_rosinality(G, d / "g.pt")
    ff.write_nvidia_pkl(G, d / "n.pkl")
    ff.write_tf_pkl(G, d / "t.pkl")
    out = {
        name: (d / f).read_bytes()
        for name, f in (("safetensors", "g.safetensors"), ("rosinality", "g.pt"), ("nvidia", "n.pkl"), ("tf", "t.pkl"))
    }
    out["legacy"] = torch_legacy_save({k: v.clone() for k, v in G.state_dict().items()})
    G3 = make_stylegan3(variant="r")  # radial filters: the 2-D filter buffers are fuzzed too
    out["stylegan3"] = stylegan3_pickle_bytes(G3, d / "executed")
    out["stylegan3-safetensors"] = save_generator(G3, d / "g3.safetensors").read_bytes()
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
    return out


@functools.cache
def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="nada-fuzz-case-"))


def outcome(data: bytes, label: str) -> str:
    """Load `data`; return 'ok' or 'refused'. Any other exception, a hang or non-finite weights fail."""
    COUNTS[label] = COUNTS.get(label, 0) + 1
    f = _scratch() / "case.bin"
    f.write_bytes(data)
    G = load_or_refuse(lambda: load_generator(f), FormatError, label, CASE_SECONDS)
    if G is None:
        return "refused"
    for k, v in G.state_dict().items():
        assert torch.isfinite(v).all(), f"{label}: loaded with non-finite {k}"
    return "ok"


@st.composite
def byte_mutation(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete", "zipdir"]))
    n = len(data)
    if kind == "truncate":
        return data[: draw(st.integers(0, n - 1))]
    buf = bytearray(data)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            # Bias toward the start, where headers, pickle opcodes and sizes live.
            pos = draw(st.one_of(st.integers(0, min(n - 1, 512)), st.integers(0, n - 1)))
            buf[pos] ^= draw(st.integers(1, 255))
        return bytes(buf)
    if kind == "overwrite":
        pos = draw(st.integers(0, n - 1))
        chunk = draw(st.binary(min_size=1, max_size=16))
        buf[pos : pos + len(chunk)] = chunk
        return bytes(buf[:n])
    if kind == "insert":
        pos = draw(st.integers(0, n))
        return data[:pos] + draw(st.binary(min_size=1, max_size=16)) + data[pos:]
    if kind == "delete":
        pos = draw(st.integers(0, n - 1))
        return data[:pos] + data[pos + draw(st.integers(1, 64)) :]
    # zip central directory / end record damage (on non-zip files: damage near the end)
    anchors = [i for sig in (b"PK\x01\x02", b"PK\x05\x06") for i in _find_all(data, sig)] or [max(0, n - 64)]
    at = draw(st.sampled_from(anchors))
    for _ in range(draw(st.integers(1, 4))):
        pos = min(n - 1, at + draw(st.integers(4, 45)))
        buf[pos] = draw(st.integers(0, 255))
    return bytes(buf)


def _find_all(data: bytes, sig: bytes) -> list[int]:
    out, i = [], data.find(sig)
    while i >= 0 and len(out) < 64:
        out.append(i)
        i = data.find(sig, i + 1)
    return out


HUGE = st.sampled_from([0, 1, 3, 2**31 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**64 - 1, -1])
ST_DTYPES = ["F16", "BF16", "F32", "F64", "I8", "U8", "I16", "I32", "I64", "BOOL", "F8_E4M3", "C64", "XYZ"]


def _mutate_config(draw, meta: dict) -> None:
    cfg = json.loads(meta["config"])
    key = draw(st.sampled_from(sorted(cfg)))
    cfg[key] = draw(st.one_of(HUGE, st.sampled_from([2**20, 2**30, 4096, 17, 0.5, None, "x", [], [2**40] * 3])))
    meta["config"] = json.dumps(cfg)


@st.composite
def safetensors_header_mutation(draw, data: bytes, metadata_mutations=None) -> bytes:
    """One change to a .safetensors header: a tensor entry's shape, dtype or offsets, a dropped entry,
    the header length, the format version, or one of `metadata_mutations` (name -> fn(draw, metadata);
    default: our generator config)."""
    extra = {"config": _mutate_config} if metadata_mutations is None else metadata_mutations
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    names = sorted(k for k in header if k != "__metadata__")
    kind = draw(st.sampled_from(["shape", "dtype", "offsets", "version", "drop", "length", *extra]))
    name = draw(st.sampled_from(names))
    if kind == "shape":
        header[name]["shape"] = draw(st.lists(st.one_of(st.integers(0, 64), HUGE), max_size=5))
    elif kind == "dtype":
        header[name]["dtype"] = draw(st.sampled_from(ST_DTYPES))
    elif kind == "offsets":
        a, b = header[name]["data_offsets"]
        header[name]["data_offsets"] = [draw(st.one_of(st.just(a), HUGE)), draw(st.one_of(st.just(b), HUGE))]
    elif kind == "version":
        header["__metadata__"]["format_version"] = draw(st.sampled_from(["0", "2", "-1", "x", "", "1e9", "99"]))
    elif kind == "drop":
        del header[name]
    elif kind in extra:
        extra[kind](draw, header["__metadata__"])
    raw = json.dumps(header).encode()
    length = len(raw)
    if kind == "length":
        length = draw(HUGE) % 2**64
    return length.to_bytes(8, "little") + raw + body


def _mutate_tensor(draw, t: torch.Tensor) -> torch.Tensor | None:
    kind = draw(st.sampled_from(["nan", "inf", "shape", "dtype", "drop", "scalar", "empty", "big"]))
    if t.numel() == 0:  # already emptied by an earlier mutation of this case
        return None
    if kind in ("nan", "inf") and not t.is_floating_point():
        t = t.float()
    if kind == "nan":
        t = t.clone().reshape(-1)
        t[draw(st.integers(0, t.numel() - 1))] = float("nan")
        return t
    if kind == "inf":
        return torch.full_like(t, float("inf"))
    if kind == "shape":
        return (
            t.reshape(-1)[: max(1, t.numel() - draw(st.integers(0, 3)))].clone() if t.numel() > 1 else t.reshape(1, 1)
        )
    if kind == "dtype":
        dtype = draw(
            st.sampled_from(
                [
                    torch.float16,
                    torch.bfloat16,
                    torch.float64,
                    torch.int8,
                    torch.uint8,
                    torch.bool,
                    torch.int64,
                    torch.complex64,
                ]
            )
        )
        return t.to(dtype)
    if kind == "drop":
        return None
    if kind == "scalar":
        return torch.tensor(1.0)
    if kind == "empty":
        return torch.zeros(0)
    return torch.zeros(t.shape[0] + draw(st.integers(1, 4)), *t.shape[1:]) if t.ndim else torch.zeros(3)


@st.composite
def tensor_mutation(draw) -> tuple[str, bytes]:
    """A checkpoint (ours, rosinality zip or legacy state dict) with one or two tensors damaged."""
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    files = base_files()
    target = draw(st.sampled_from(["safetensors", "rosinality", "legacy"]))
    if target == "safetensors":
        raw = files["safetensors"]
        n = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + n])["__metadata__"]
        sd = dict(st_load(raw))
    else:
        obj = torch.load(io.BytesIO(files[target]), weights_only=True)
        sd = obj["g_ema"] if target == "rosinality" else obj
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(sorted(sd)))
        new = _mutate_tensor(draw, sd[key])
        if new is None:
            del sd[key]
        else:
            sd[key] = new
    if draw(st.booleans()):
        sd["extra.tensor"] = torch.zeros(2)
    if target == "safetensors":
        try:
            return target, st_save({k: v.contiguous() for k, v in sd.items()}, metadata=meta)
        except Exception:  # safetensors cannot write some dtypes (complex): write them with torch instead
            target = "legacy"
    if target == "rosinality":
        buf = io.BytesIO()
        torch.save({**obj, "g_ema": sd}, buf)
        return target, buf.getvalue()
    return target, torch_legacy_save(sd)


FORMATS = ["safetensors", "rosinality", "nvidia", "tf", "legacy", "stylegan3", "stylegan3-safetensors"]


def _run_bytes(fmt: str, examples: int) -> None:
    data = base_files()[fmt]
    assert outcome(data, fmt + "/base") == "ok"

    @settings(max_examples=examples, **FAST)
    @given(st.data())
    def prop(d):
        outcome(d.draw(byte_mutation(data)), f"{fmt}/bytes")

    prop()


def _run_structure(examples: int) -> None:
    data = base_files()["safetensors"]
    data3 = base_files()["stylegan3-safetensors"]

    @settings(max_examples=examples, **FAST)
    @given(st.data())
    def header(d):
        outcome(d.draw(safetensors_header_mutation(data)), "safetensors/header")
        # StyleGAN3 configs: schedule settings (cutoffs, layer counts, filter sizes) mutated too
        outcome(d.draw(safetensors_header_mutation(data3)), "stylegan3-safetensors/header")

    @settings(max_examples=examples, **FAST)
    @given(tensor_mutation())
    def tensors(case):
        target, blob = case
        outcome(blob, f"{target}/tensors")

    header()
    tensors()


def _report(capsys, label: str, before_peak: int) -> None:
    grown = peak_rss_bytes() - before_peak
    total = sum(COUNTS.values())
    with capsys.disabled():
        print(
            f"\nfuzz {label}: {total} cases so far ({', '.join(f'{k} {v}' for k, v in sorted(COUNTS.items()))}); "
            f"peak RSS +{grown / 2**20:.0f} MiB"
        )
    assert grown < MEMORY_BUDGET, f"peak memory grew by {grown / 2**20:.0f} MiB"


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_bytes_load_or_refuse(fmt, capsys):
    before = peak_rss_bytes()
    _run_bytes(fmt, 80)
    _report(capsys, fmt, before)


def test_mutated_structures_load_or_refuse(capsys):
    before = peak_rss_bytes()
    _run_structure(100)
    _report(capsys, "structures", before)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_bytes_load_or_refuse_long(fmt, capsys):
    before = peak_rss_bytes()
    _run_bytes(fmt, 600)
    _report(capsys, fmt + " (long)", before)


@pytest.mark.slow
def test_mutated_structures_load_or_refuse_long(capsys):
    before = peak_rss_bytes()
    _run_structure(800)
    _report(capsys, "structures (long)", before)
