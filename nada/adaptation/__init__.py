"""The adaptation run: `config` describes it, `run` executes it (`step` is one step), `result` reports it,
`parameterizations` says what it trains. `nada.adapt` is `run.adapt`."""

from .config import PARAMETERIZATIONS, AdaptConfig, Option
from .parameterizations import Parameterization, make_parameterization
from .result import AdaptResult, adapter_of, attach_adapter
from .run import AdaptError, AdaptOutOfMemory, AdaptProgress, adapt, make_run
from .step import StepInputs, draw_inputs

__all__ = [
    "PARAMETERIZATIONS",
    "AdaptConfig",
    "AdaptError",
    "AdaptOutOfMemory",
    "AdaptProgress",
    "AdaptResult",
    "Option",
    "Parameterization",
    "StepInputs",
    "adapt",
    "adapter_of",
    "attach_adapter",
    "draw_inputs",
    "make_parameterization",
    "make_run",
]
