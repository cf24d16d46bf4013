"""Command-line options generated from a config dataclass's fields (help, range, choices in `Option`).

add_config_options(parser.add_argument_group("training"), AdaptConfig, exclude={"preview_every"})
config = config_from_args(args, AdaptConfig)
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping
from typing import Any

from ..errors import ConfigError

CHECKPOINTING = {"auto": "auto", "on": True, "off": False}
# Flags kept from before the options were generated, so existing command lines still work.
ALIASES = {"auto_k": ("--k",)}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    if value is True or value is False:
        return "on" if value else "off"
    return str(value)


def add_config_options(
    parser: Any,
    cls: type,
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """One option per field of `cls` (or of `only`), minus `exclude`; `defaults` override the class's."""
    for name, (default, opt) in cls.options().items():
        if (only is not None and name not in only) or name in exclude:
            continue
        default = (defaults or {}).get(name, default)
        shown = "" if default is None else f" (default {_shown(default)})"
        kw: dict[str, Any] = {"dest": name, "default": default, "help": opt.help + shown}
        if opt.kind == "int":
            kw["type"] = int
        elif opt.kind == "float":
            kw["type"] = float
        elif opt.kind == "choice":
            kw["choices"] = list(opt.choices)
        elif opt.kind == "checkpointing":
            kw["choices"] = list(CHECKPOINTING)
            kw["default"] = next(k for k, v in CHECKPOINTING.items() if v == default and type(v) is type(default))
        parser.add_argument(flag(name), *ALIASES.get(name, ()), **kw)


def config_from_args(args: argparse.Namespace, cls: type, **overrides: Any) -> Any:
    """The config of the parsed options (fields not on the command line keep the class default).
    A `ConfigError` names the option (`--lr`) instead of the field."""
    kw: dict[str, Any] = {}
    for name, (_, opt) in cls.options().items():
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        if opt.kind == "checkpointing":
            value = CHECKPOINTING[value]
        elif opt.kind == "layers" and isinstance(value, str) and "," in value:
            value = tuple(x for x in value.split(",") if x)
        kw[name] = value
    kw.update(overrides)
    try:
        return cls(**kw)
    except ConfigError as e:
        if e.field is None:
            raise
        raise ConfigError(str(e).replace(f"{cls.__name__}.{e.field}", flag(e.field)), field=e.field) from None
