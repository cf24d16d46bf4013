"""The socket types of our nodes, in one place so a rename is one edit.

ComfyUI connects an output to an input when their type strings are equal, so these strings are part of
the pack's public surface: saved workflows store them on their links. Each carries the NADA_ prefix:
another StyleGAN pack names its own, different objects STYLEGAN and STYLEGAN_LATENT, and equal strings
would let the canvas link its outputs to our inputs (and the run crash).
"""

GENERATOR = "NADA_STYLEGAN"  # a nada.Generator
LATENT = "NADA_LATENT"  # W+ latents [B, num_ws, w_dim] (with their generator's fingerprint)
CLIP = "NADA_CLIP"  # a nada CLIP model or ensemble
DIRECTION = "NADA_DIRECTION"  # a CLIP-space direction
ADAPTER = "NADA_ADAPTER"  # a list of (adapter, strength)
ENCODER = "NADA_ENCODER"  # a nada.Encoder (pSp / e4e / ReStyle)
LOSS_MAP = "LOSS_MAP"  # ComfyUI's own: {"loss": [float per step]}, drawn by its Plot Loss Graph node (nodes_train.py)
