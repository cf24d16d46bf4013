"""The engine's version: part of every run key (`nada.runs`), so an update never silently reuses a result
trained by older code. Raise ENGINE_VERSION whenever the numbers a run produces change."""

__version__ = "0.1.0"
ENGINE_VERSION = 2  # 2: adaptive selection runs in chunks of the training batch (may flip a near-tie)
