"""StyleGAN3 (alias-free GAN, T and R) in plain PyTorch: the generator and its config.

Checkpoints are read and written by `nada.stylegan2.formats` (one loader for both families).
"""

from .config import StyleGAN3Config, layer_specs
from .networks import StyleGAN3Generator

__all__ = ["StyleGAN3Config", "StyleGAN3Generator", "layer_specs"]
