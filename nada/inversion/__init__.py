"""Inversion: photos -> W+ latents with the pSp, e4e and ReStyle encoders people have, or the projector.

    enc = nada.load_encoder("e4e_ffhq_encode.pt")       # decoder: nada.load_generator(same file)
    w = nada.invert(enc, prepare_face(photos)).latents  # [B, num_ws, w_dim]

`encoders` reads the checkpoints, `backbones` holds their IR-SE50 / ResNet34 parts, `inference` runs
them (ReStyle's refinement included), `faces` prepares aligned faces; `project` optimises a latent
for any generator (`nada.project`), with the losses of `perceptual`; `cli` is `python -m nada invert`.
"""

from .encoders import KINDS, Encoder, EncoderSpec, load_encoder
from .faces import prepare_face
from .inference import InversionResult, invert

__all__ = ["KINDS", "Encoder", "EncoderSpec", "InversionResult", "invert", "load_encoder", "prepare_face"]
