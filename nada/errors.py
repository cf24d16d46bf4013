"""The exceptions comfyui-nada raises. Every message names what was found and what the user can do."""

from __future__ import annotations


class NadaError(Exception):
    """Base class of every error raised on purpose by comfyui-nada."""


class ConfigError(NadaError, ValueError):
    """A configuration value is out of range or inconsistent."""
