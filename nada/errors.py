"""The exceptions comfyui-nada raises. Every message names what was found and what the user can do."""

from __future__ import annotations


class NadaError(Exception):
    """Base class of every error raised on purpose by comfyui-nada."""


class ConfigError(NadaError, ValueError):
    """A configuration value is out of range or inconsistent.

    `field` names the config field at fault (None when several are), so a front end can name its own
    input instead (the ComfyUI node maps fields to inputs with a table).
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ClipError(NadaError):
    """A CLIP model cannot be loaded or used as asked (unknown architecture, bad weights file, ...)."""


class DirectionError(NadaError, ValueError):
    """A CLIP direction cannot be made or used (identical or empty prompts, zero direction, ...)."""


class FormatError(NadaError, ValueError):
    """A checkpoint file cannot be read as a generator or encoder (unknown, truncated, unsafe or unsupported)."""


class InversionError(NadaError, ValueError):
    """Images cannot be inverted as asked: wrong size or channels, an empty batch, or an encoder and a
    generator that do not fit together."""


class ProjectionError(NadaError, ValueError):
    """An image cannot be projected as asked (bad image batch, unusable latent init or weights file)."""
