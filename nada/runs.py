"""Run persistence, shared by the NADA Adapt node and `python -m nada adapt --runs-dir`: run keys,
autosave, partial and failed saves, reuse of a finished run, resume and extend, save every N steps,
keep-last-K and a size limit for the folder.

A run's *family* is everything that changes its weights except the number of steps: the engine
version, the base generator's fingerprint, the direction, the CLIP members and the config fields
marked `affects_result` (not the previews, not gradient checkpointing). Because no random draw depends
on `steps`, the run of M steps passes through the run of N < M steps, so every save of a family is
"the family at step N". Files in the folder, per save:

    <label>_<family>_step000150.safetensors           the generator after 150 steps (a finished run)
    <label>_<family>_step000100-partial.safetensors   a snapshot (save every N) or a cancelled run
    <label>_<family>_failed-step000042.safetensors    the last good weights of a diverged run
    ... .adapter                                      its adapter (lora / modulation runs)
    ... .state                                        its resumable state (`nada.run_state`)

`run_adaptation` loads the finished save of the asked steps if there is one (reuse), else continues
from the latest state at or below them (resume; extend when a finished run had fewer steps), else
trains from the start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adaptation import AdaptConfig, AdaptError, AdaptResult, adapt, attach_adapter
from .adapters import load_adapter, save_adapter
from .clip import as_ensemble
from .errors import ConfigError
from .run_state import load_state, save_state
from .stylegan2.formats import load_generator, save_generator
from .version import ENGINE_VERSION

log = logging.getLogger(__name__)

ADAPTER_SUFFIX = ".adapter"  # an extension no loader lists, so sidecars do not show up as generators
STATE_SUFFIX = ".state"
_SAVE = re.compile(r"_step(\d{6,})(-partial)?\.safetensors$")


def content_hash(obj: Any, h: Any = None) -> str:
    """A stable hash of nested dataclasses / dicts / lists / tensors / scalars."""
    top = h is None
    h = h or hashlib.sha256()
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"T|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, nn.Module):
        raise TypeError("hash a module by its fingerprint(), not by content_hash")
    elif hasattr(obj, "__dataclass_fields__"):
        h.update(f"D|{type(obj).__name__}|".encode())
        for name in sorted(obj.__dataclass_fields__):
            h.update(name.encode())
            content_hash(getattr(obj, name), h)
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            content_hash(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"[{len(obj)}|".encode())
        for x in obj:
            content_hash(x, h)
    else:
        h.update(f"{type(obj).__name__}|{obj!r}|".encode())
    return h.hexdigest() if top else ""


def family_key(G: nn.Module, clip: Any, direction: Any, config: AdaptConfig) -> str:
    """The run key without `steps` (20 hex digits). CLIP members are identified by their description
    (architecture, tag or weights file, config, precision, weight): hashing every CLIP weight would
    cost seconds per queue and names the same models."""
    fields = config.result_dict()
    del fields["steps"]
    return content_hash([ENGINE_VERSION, G.fingerprint(), direction, as_ensemble(clip).describe(), fields])[:20]


def run_key(G: nn.Module, clip: Any, direction: Any, config: AdaptConfig) -> str:
    """What identifies a run's result: the family and the number of steps."""
    return f"{family_key(G, clip, direction, config)}_step{config.steps:06d}"


@dataclasses.dataclass(frozen=True)
class RunPolicy:
    """What `run_adaptation` keeps. autosave off: nothing is written (nor reused or resumed)."""

    autosave: bool = True  # save the finished run (with its state, so it can be extended)
    reuse: bool = True  # load the finished save of the same run instead of training; resume from states
    save_every: int = 0  # also save a snapshot with its state every N steps (0 = off)
    keep_last: int = 2  # snapshots kept per run (older ones are deleted; finished saves are kept)
    max_bytes: int = 0  # size limit of the folder: the oldest saves of other runs go first (0 = none)

    def __post_init__(self) -> None:
        for name, lo in (("save_every", 0), ("keep_last", 1), ("max_bytes", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"RunPolicy.{name} must be an integer >= {lo}, got {v!r}", field=name)


@dataclasses.dataclass(frozen=True)
class Save:
    step: int
    path: Path
    partial: bool

    @property
    def state(self) -> Path:
        return self.path.with_suffix(STATE_SUFFIX)


@dataclasses.dataclass
class RunOutcome:
    result: AdaptResult
    reused: Path | None = None  # the save that was loaded instead of training
    resumed_from: int = 0  # the step the run continued from (0 = from the start)
    saved: Path | None = None  # where the result was saved


class RunStore:
    """The saves of runs in one folder."""

    def __init__(self, folder: str | os.PathLike, policy: RunPolicy = RunPolicy()):
        self.folder = Path(folder)
        self.policy = policy

    def saves(self, family: str) -> list[Save]:
        """Every step save of the family (finished and partial), by step."""
        if not self.folder.is_dir():
            return []
        out = []
        for p in self.folder.glob(f"*_{family}_step*.safetensors"):
            m = _SAVE.search(p.name)
            if m:
                out.append(Save(int(m[1]), p, bool(m[2])))
        return sorted(out, key=lambda s: (s.step, s.partial))  # a finished save before a snapshot of its step

    def finished(self, family: str, steps: int) -> Save | None:
        return next((s for s in self.saves(family) if s.step == steps), None)

    def latest_state(self, family: str, max_step: int) -> Save | None:
        with_state = [s for s in self.saves(family) if s.step <= max_step and s.state.is_file()]
        return with_state[-1] if with_state else None

    def load(self, save: Save, config: AdaptConfig) -> AdaptResult:
        G = load_generator(save.path)
        adapter_path = save.path.with_suffix(ADAPTER_SUFFIX)
        adapter = load_adapter(adapter_path) if adapter_path.is_file() else None
        attach_adapter(G, adapter)
        meta = G.metadata.get("adaptation", {})
        return AdaptResult(
            generator=G, adapter=adapter, config=config, steps=int(meta.get("steps", save.step)), interrupted=False,
            loss_history=[float(v) for v in meta.get("loss_history", [])],
            selection_history=list(meta.get("selection_history", [])),
        )  # fmt: skip

    def save(self, result: AdaptResult, stem: str, family: str) -> Path:
        """Write the generator, its adapter and its state (if the result has them); an existing save of
        the same name is kept (another queue of the same run wrote it first)."""
        path = self.folder / f"{stem}.safetensors"
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            save_generator(result.generator, path)
        except FileExistsError:
            return path
        if result.adapter is not None:
            save_adapter(result.adapter, path.with_suffix(ADAPTER_SUFFIX))
        if result.state is not None:
            save_state(result.state, path.with_suffix(STATE_SUFFIX), family)
        return path

    def prune(self, family: str) -> None:
        """Keep-last-K of the family's snapshots, then the folder's size limit (never this family's saves)."""
        snapshots = [s for s in self.saves(family) if s.partial]
        for s in snapshots[: max(0, len(snapshots) - self.policy.keep_last)]:
            _remove(s.path)
        if self.policy.max_bytes:
            groups: dict[Path, list[Path]] = {}
            for p in self.folder.iterdir():
                if p.suffix in (".safetensors", ADAPTER_SUFFIX, STATE_SUFFIX):
                    groups.setdefault(p.with_suffix(".safetensors"), []).append(p)
            total = sum(p.stat().st_size for files in groups.values() for p in files)
            for main in sorted(groups, key=lambda m: min(p.stat().st_mtime for p in groups[m])):
                if total <= self.policy.max_bytes:
                    break
                if family in main.name:
                    continue
                total -= sum(p.stat().st_size for p in groups[main])
                _remove(main)
                log.info("removed %s: the autosave folder is over its size limit", main.name)


def _remove(path: Path) -> None:
    for p in (path, path.with_suffix(ADAPTER_SUFFIX), path.with_suffix(STATE_SUFFIX)):
        p.unlink(missing_ok=True)


def run_adaptation(
    G: nn.Module,
    clip: Any,
    direction: Any,
    config: AdaptConfig,
    store: RunStore,
    label: str = "adapted",
    **adapt_kwargs: Any,
) -> RunOutcome:
    """`nada.adapt` with the run's saves in `store` (see the module docstring). `adapt_kwargs` are
    adapt's callback / preview / should_stop / device. A cancelled run is saved as a snapshot with its
    state and returned (`result.interrupted`). A failed run re-raises its `AdaptError` with `saved` set:
    a resumable failure (e.g. out of memory) is saved as a snapshot with its state, so the next call
    continues with the step that failed; a diverged one as a failed save without a state."""
    policy = store.policy
    family = family_key(G, clip, direction, config)
    stem = f"{_slug(label)}_{family}"
    resume, resumed_from = None, 0
    if policy.autosave and policy.reuse:
        done = store.finished(family, config.steps)
        if done is not None:
            log.info("reusing %s (same run)", done.path.name)
            return RunOutcome(store.load(done, config), reused=done.path)
        latest = store.latest_state(family, config.steps)
        if latest is not None:
            resume, resumed_from = load_state(latest.state, family), latest.step
            log.info("continuing %s from step %d", latest.path.name, latest.step)

    def checkpoint(snapshot: AdaptResult) -> None:
        store.save(snapshot, f"{stem}_step{snapshot.steps:06d}-partial", family)
        store.prune(family)

    try:
        result = adapt(
            G, clip, direction, config, resume=resume, with_state=policy.autosave,
            checkpoint=checkpoint if policy.autosave and policy.save_every else None,
            checkpoint_every=policy.save_every if policy.autosave else 0, **adapt_kwargs,
        )  # fmt: skip
    except AdaptError as e:
        if policy.autosave and e.result is not None and e.result.steps > resumed_from:
            if e.resumable:  # e.g. out of memory: the next queue continues from here
                name = f"{stem}_step{e.result.steps:06d}-partial"
            else:  # diverged: resuming would only diverge again, so keep the weights without a state
                e.result.state, name = None, f"{stem}_failed-step{e.result.steps:06d}"
            e.saved = store.save(e.result, name, family)
            store.prune(family)
        raise
    saved = None
    if policy.autosave and result.steps > resumed_from:
        partial = "-partial" if result.interrupted else ""
        saved = store.save(result, f"{stem}_step{result.steps:06d}{partial}", family)
        store.prune(family)
    return RunOutcome(result, resumed_from=resumed_from, saved=saved)


def _slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return (s[:limit].rstrip("-")) or "adapted"
