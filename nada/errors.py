"""The exceptions comfyui-nada raises. Every message names what was found and what the user can do."""

from __future__ import annotations


class NadaError(Exception):
    """Base class of every error raised on purpose by comfyui-nada."""


class ConfigError(NadaError, ValueError):
    """A configuration value is out of range or inconsistent."""


class ClipError(NadaError):
    """A CLIP model cannot be loaded or used as asked (unknown architecture, bad weights file, ...)."""


class DirectionError(NadaError, ValueError):
    """A CLIP direction cannot be made or used (identical or empty prompts, zero direction, ...)."""


class FormatError(NadaError, ValueError):
    """A checkpoint file cannot be read as a generator (unknown, truncated, unsafe or unsupported)."""


class ProjectionError(NadaError, ValueError):
    """An image cannot be projected as asked (bad image batch, unusable latent init or weights file)."""
