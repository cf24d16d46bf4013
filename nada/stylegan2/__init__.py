"""StyleGAN2 in plain PyTorch: the generator, its config, and the checkpoint formats."""

from .config import GeneratorConfig, channels_nvidia, channels_rosinality
from .networks import Generator

__all__ = ["Generator", "GeneratorConfig", "channels_nvidia", "channels_rosinality"]
