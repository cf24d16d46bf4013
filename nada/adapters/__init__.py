"""NADA adapters: a domain shift stored as a few learned tensors that apply to a base generator.

Three parameterisations of the change made by `nada.adapt`:

- ``full``: every trained tensor is replaced (the paper). Its adapter is extracted afterwards from the
  base and the adapted generator (`extract`): the exact differences (kind ``delta``), or, with a rank,
  low-rank factors of the weight matrices plus the exact change of every other tensor (kind ``lora``
  with ``.delta`` entries), so published full checkpoints become small adapters too.
- ``lora``: each trained convolution weight W [out, in, k, k] becomes W + B @ A with B [out, r],
  A [r, in*k*k] (rank r). B starts at zero, so training starts from the base generator exactly.
- ``modulation``: each trained layer's style vector is scaled per channel, s' = s * (1 + d), the
  "domain modulation" idea of HyperDomainNet. The scaling is folded into the style affine's weight and
  bias rows, so applying it is a change of two small tensors per layer.

Applying several adapters with strengths: additive updates (lora, delta) are summed, each times its
strength; modulation factors combine as 1 + sum(strength_i * d_i). Strength 1 reproduces the adapted
generator exactly and strength 0 the base exactly; negative strengths and strengths above 1 extrapolate.
"""

from .adapter import KINDS, Adapter, AdapterError, apply_adapters, is_conv_weight, lora_delta, modulated_affine
from .extract import ERROR_SEEDS, UNRELATED, Shift, extract_adapter, image_error, measure_shift, render_seeds
from .files import FORMAT, FORMAT_VERSION, load_adapter, save_adapter

__all__ = [
    "ERROR_SEEDS",
    "FORMAT",
    "FORMAT_VERSION",
    "KINDS",
    "UNRELATED",
    "Adapter",
    "AdapterError",
    "Shift",
    "apply_adapters",
    "extract_adapter",
    "image_error",
    "is_conv_weight",
    "load_adapter",
    "lora_delta",
    "measure_shift",
    "modulated_affine",
    "render_seeds",
    "save_adapter",
]
