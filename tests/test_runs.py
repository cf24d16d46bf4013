"""nada.runs: reuse, resume and extend (bit-exact on the CPU), save every N with keep-last-K, the
autosave switch, the folder's size limit, and run keys that hold only what changes the result."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import nada.runs as runs
from nada.adaptation import AdaptConfig, AdaptError, adapt
from nada.adaptation.config import OFFICIAL_SWITCHES
from nada.clip import clip_ensemble
from nada.directions import text_direction
from nada.fingerprints import fingerprint
from nada.run_state import RunStateError, load_state
from tests.adapt_fixtures import make_generator
from tests.clip_fixtures import micro_clip_ensemble

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return micro_clip_ensemble(tmp_path_factory)


@pytest.fixture(scope="module")
def direction(clip):
    return text_direction(clip, "red", "blue", templates=None)


@pytest.fixture(scope="module")
def G():
    return make_generator(seed=0, resolution=16)


CONFIGS = {
    "full": dict(),
    "lora-mixing": dict(parameterization="lora", rank=2, mixing=0.5),
    "auto-every-2-patch": dict(layers="auto", auto_k=2, select_every=2, lambda_patch=1.0, lambda_global=0.5),
    "modulation-manifold": dict(parameterization="modulation", lambda_manifold=1.0, batch=3),
}


def config(**kw) -> AdaptConfig:
    return AdaptConfig(**{"seed": 3, "preview_count": 0, **kw})


def assert_same_run(a, b):
    """Bit-identical weights and histories (same process, same op order: floating point promises it)."""
    sa, sb = a.generator.state_dict(), b.generator.state_dict()
    assert sa.keys() == sb.keys()
    for k, v in sa.items():
        assert torch.equal(v, sb[k]), k
    assert a.loss_history == b.loss_history
    assert a.term_history == b.term_history  # per-term losses survive the state file too
    assert a.selection_history == b.selection_history
    assert a.steps == b.steps


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_extending_a_saved_run_gives_the_bits_of_one_long_run(G, clip, direction, tmp_path, kind):
    store = runs.RunStore(tmp_path)
    short = runs.run_adaptation(G, clip, direction, config(steps=3, **CONFIGS[kind]), store, label="blue")
    assert short.saved is not None and short.saved.with_suffix(".state").is_file() and not short.resumed_from
    extended = runs.run_adaptation(G, clip, direction, config(steps=5, **CONFIGS[kind]), store, label="blue")
    assert extended.resumed_from == 3
    fresh = adapt(G, clip, direction, config(steps=5, **CONFIGS[kind]), device="cpu")
    assert_same_run(extended.result, fresh)
    assert extended.result.generator.metadata["adaptation"]["loss_history"] == [round(v, 6) for v in fresh.loss_history]
    assert (fresh.adapter is None) == (CONFIGS[kind].get("parameterization", "full") == "full")
    if fresh.adapter is not None:
        assert all(torch.equal(v, fresh.adapter.tensors[k]) for k, v in extended.result.adapter.tensors.items())


def test_resume_after_cancel_loses_nothing_and_reuse_loads_the_finished_run(G, clip, direction, tmp_path):
    store = runs.RunStore(tmp_path)
    seen = []
    cancelled = runs.run_adaptation(
        G, clip, direction, config(steps=6, layers="auto", auto_k=2), store,
        callback=lambda p: seen.append(p.step), should_stop=lambda: len(seen) >= 4,
    )  # fmt: skip
    assert cancelled.result.interrupted and cancelled.result.steps == 4
    assert cancelled.saved.name.endswith("_step000004-partial.safetensors")
    resumed = runs.run_adaptation(G, clip, direction, config(steps=6, layers="auto", auto_k=2), store)
    assert resumed.resumed_from == 4 and not resumed.result.interrupted
    assert_same_run(resumed.result, adapt(G, clip, direction, config(steps=6, layers="auto", auto_k=2), device="cpu"))
    again = runs.run_adaptation(G, clip, direction, config(steps=6, layers="auto", auto_k=2, preview_every=3), store)
    assert again.reused == resumed.saved  # preview_every changes nothing, so it is the same run
    for k, v in again.result.generator.state_dict().items():
        assert torch.equal(v, resumed.result.generator.state_dict()[k]), k


class FailingEncoder:
    """The real CLIP, except that its `fail_at`-th image encoding runs out of memory."""

    def __init__(self, model, fail_at: int):
        self.model, self.fail_at, self.calls = model, fail_at, 0

    def __call__(self, images):
        self.calls += 1
        if self.calls == self.fail_at:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.model.encode_images(images)


def test_a_crash_inside_a_step_loses_only_that_step(G, clip, direction, tmp_path):
    single = clip.members[0].model
    d = text_direction(single, "red", "blue", templates=None)
    store = runs.RunStore(tmp_path)
    failing = copy.copy(single)
    # Two encodings per step (frozen and trained images): the 7th is in step 4.
    failing.encode_images = FailingEncoder(single, fail_at=7)
    with pytest.raises(AdaptError, match="ran out of memory at step 4 of 6") as info:
        runs.run_adaptation(G, failing, d, config(steps=6), store)
    assert info.value.resumable and info.value.saved.name.endswith("_step000003-partial.safetensors")
    resumed = runs.run_adaptation(G, single, d, config(steps=6), store)
    assert resumed.resumed_from == 3
    assert_same_run(resumed.result, adapt(G, single, d, config(steps=6), device="cpu"))


def test_a_diverged_run_is_kept_as_failed_without_a_state(G, clip, direction, tmp_path):
    store = runs.RunStore(tmp_path)
    with pytest.raises(AdaptError, match="diverged") as info:
        runs.run_adaptation(G, clip, direction, config(steps=5, lr=1e30), store)
    assert "_failed-step" in info.value.saved.name and not info.value.saved.with_suffix(".state").exists()
    assert not store.saves(runs.family_key(G, clip, direction, config(steps=5, lr=1e30)))  # nothing to resume


def test_save_every_keeps_the_last_k_step_numbered_snapshots(G, clip, direction, tmp_path):
    store = runs.RunStore(tmp_path, runs.RunPolicy(save_every=2, keep_last=2))
    out = runs.run_adaptation(G, clip, direction, config(steps=7), store, label="Blue sky!")
    names = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    family = runs.family_key(G, clip, direction, config(steps=7))
    assert names == [f"blue-sky_{family}_step{n}.safetensors" for n in ("000004-partial", "000006-partial", "000007")]
    assert all(p.with_suffix(".state").is_file() for p in tmp_path.glob("*.safetensors"))
    assert out.saved.name.endswith("_step000007.safetensors")
    # A snapshot is the run at that step: continuing it to 7 reproduces the finished run.
    (tmp_path / f"blue-sky_{family}_step000007.safetensors").unlink()
    (tmp_path / f"blue-sky_{family}_step000007.state").unlink()
    again = runs.run_adaptation(G, clip, direction, config(steps=7), runs.RunStore(tmp_path))
    assert again.resumed_from == 6
    assert_same_run(again.result, out.result)


def test_autosave_off_writes_nothing_and_reuses_nothing(G, clip, direction, tmp_path):
    runs.run_adaptation(G, clip, direction, config(steps=2), runs.RunStore(tmp_path / "on"))
    off = runs.RunStore(tmp_path / "on", runs.RunPolicy(autosave=False, save_every=1))
    before = sorted(p.name for p in (tmp_path / "on").iterdir())
    out = runs.run_adaptation(G, clip, direction, config(steps=2), off)
    assert out.reused is None and out.saved is None and out.result.state is None
    assert sorted(p.name for p in (tmp_path / "on").iterdir()) == before


def test_the_size_limit_removes_the_oldest_other_runs_first(G, clip, direction, tmp_path):
    first = runs.run_adaptation(G, clip, direction, config(steps=1, seed=1), runs.RunStore(tmp_path))
    size = sum(p.stat().st_size for p in tmp_path.iterdir())
    limited = runs.RunStore(tmp_path, runs.RunPolicy(max_bytes=int(2.5 * size)))
    second = runs.run_adaptation(G, clip, direction, config(steps=1, seed=2), limited)
    assert first.saved.exists() and second.saved.exists()  # two runs fit
    third = runs.run_adaptation(G, clip, direction, config(steps=1, seed=3), limited)
    assert not first.saved.exists() and not first.saved.with_suffix(".state").exists()  # the oldest went
    assert second.saved.exists() and third.saved.exists()
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 2.5 * size


def test_run_keys_hold_only_what_changes_the_result(G, clip, direction, monkeypatch):
    base = config(steps=10)
    key = runs.family_key(G, clip, direction, base)
    same = {
        "preview_every": 5,
        "preview_count": 1,
        "preview_truncation": 0.5,
        "gradient_checkpointing": True,
        "steps": 20,
    }
    for field, value in same.items():
        assert runs.family_key(G, clip, direction, dataclasses.replace(base, **{field: value})) == key, field
    assert runs.run_key(G, clip, direction, base) != runs.run_key(
        G, clip, direction, dataclasses.replace(base, steps=20)
    )
    different = {
        "lr": 0.001,
        "seed": 4,
        "layers": "texture",
        "batch": 3,
        "mixing": 0.5,
        "lambda_global": 1.0,
        "lambda_manifold": 1.0,
        "parameterization": "lora",
        "select_every": 2,
        "auto_k": 3,
        "autocast": "bf16",
        "compat": "official",
        **OFFICIAL_SWITCHES,  # each fidelity switch at its official value (fused_modconv among them)
    }
    for field, value in different.items():
        assert runs.family_key(G, clip, direction, dataclasses.replace(base, **{field: value})) != key, field
    # Every result-changing field is covered above or by the checks below.
    covered = (
        set(same)
        | set(different)
        | {
            "select_batch",
            "select_lr",
            "select_iters",
            "lambda_direction",
            "lambda_patch",
            "patch_fraction",
            "patch_count",
            "rank",
        }
    )
    assert covered == set(AdaptConfig.options())
    for field in covered - set(same):
        assert AdaptConfig.options()[field][1].affects_result, field
    assert runs.family_key(G, clip, text_direction(clip, "red", "green", templates=None), base) != key
    reweighted = clip_ensemble([(clip.members[0].model, 1.0), (clip.members[1].model, 0.25)])
    assert runs.family_key(G, reweighted, direction, base) != key
    assert runs.family_key(make_generator(seed=1, resolution=16), clip, direction, base) != key
    monkeypatch.setattr(runs, "ENGINE_VERSION", runs.ENGINE_VERSION + 1)
    assert runs.family_key(G, clip, direction, base) != key  # an engine update never reuses old results


def test_a_state_refuses_another_run(G, clip, direction, tmp_path):
    out = runs.run_adaptation(G, clip, direction, config(steps=1), runs.RunStore(tmp_path))
    with pytest.raises(RunStateError, match="belongs to another run"):
        load_state(out.saved.with_suffix(".state"), "0" * 20)
    out.saved.with_suffix(".state").write_bytes(b"not a state")
    with pytest.raises(RunStateError, match="not a readable run state"):
        load_state(out.saved.with_suffix(".state"), runs.family_key(G, clip, direction, config(steps=1)))


def test_the_fingerprint_is_computed_once_while_the_weights_are_unchanged(G):
    H = copy.deepcopy(G)
    first = fingerprint(H)
    assert fingerprint(H) == first and H.fingerprint() == first
    with torch.no_grad():
        next(H.parameters()).add_(1.0)  # an in-place write bumps the tensor's version
    assert fingerprint(H) != first
