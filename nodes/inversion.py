"""Inversion nodes: load a pSp / e4e / ReStyle encoder, turn photos into W+ latents.

The latent goes to Render Latent with the original and the adapted generator: the same photo,
before and after the adaptation.
"""

from __future__ import annotations

from nada import devices as nada_devices
from nada import images as nada_images
from nada import inversion as nada_inversion
from nada.adaptation import memory as nada_memory
from nada.stylegan2 import formats as nada_formats

from . import comfy_bridge as bridge
from .types import ENCODER, GENERATOR, LATENT

CATEGORY = "StyleGAN-NADA/inversion"


class LoadEncoder:
    NODE_ID = "NADA_LoadEncoder"
    DISPLAY_NAME = "Load Encoder (pSp / e4e / ReStyle)"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads an image encoder from models/stylegan_encoders: the published pSp, e4e, ReStyle-pSp and "
        "ReStyle-e4e checkpoints (e.g. e4e_ffhq_encode.pt, restyle_e4e_ffhq_encode.pt). The architecture is "
        "inferred from the file, which is read without running any code from it. The file also holds the "
        "generator the encoder was trained with (e.g. FFHQ): the second output, for Invert Image, Render Latent "
        "and NADA Adapt."
    )
    SEARCH_ALIASES = ["e4e", "psp", "restyle", "gan inversion", "image to latent", "encoder4editing"]
    RETURN_TYPES = (ENCODER, GENERATOR)
    RETURN_NAMES = ("encoder", "generator")
    OUTPUT_TOOLTIPS = (
        "The encoder, on the CPU in eval mode.",
        "The generator stored in the same file (the encoder's decoder): the original to adapt and render with.",
    )
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "encoder_name": (
                    bridge.list_files(bridge.ENCODER_FOLDER),
                    {"tooltip": "A pSp / e4e / ReStyle checkpoint (.pt) in models/stylegan_encoders."},
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, encoder_name):
        return bridge.file_signature(bridge.ENCODER_FOLDER, encoder_name)

    def load(self, encoder_name):
        path = bridge.full_path(bridge.ENCODER_FOLDER, encoder_name)
        return nada_inversion.load_encoder(path), nada_formats.load_generator(path)


class InvertImage:
    NODE_ID = "NADA_InvertImage"
    DISPLAY_NAME = "Invert Image (StyleGAN encoder)"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Turns photos into W+ latents with an encoder (pSp/e4e in one pass, ReStyle in n refinement steps) "
        "and renders the reconstruction. Faces must be aligned the FFHQ way first; the image is resized to "
        "the encoder's 256x256 input. Render the latent with an adapted generator to see the photo in the new "
        "domain."
    )
    SEARCH_ALIASES = ["gan inversion", "photo to latent", "encode face", "e4e", "restyle", "psp"]
    RETURN_TYPES = (LATENT, "IMAGE")
    RETURN_NAMES = ("latent", "reconstruction")
    OUTPUT_TOOLTIPS = (
        "W+ latents, one per image; Render Latent takes them with this generator or one adapted from it.",
        "The images the generator makes from the latents ([batch, height, width, 3] in 0..1).",
    )
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "encoder": (ENCODER, {"tooltip": "An encoder from Load Encoder."}),
                "images": ("IMAGE", {"tooltip": "Aligned face photos (or images of the encoder's domain)."}),
                "n_iters": (
                    "INT",
                    {
                        "default": 5,
                        "min": 1,
                        "max": 20,
                        "step": 1,
                        "tooltip": "ReStyle refinement steps (5 is the authors' default); pSp and "
                        "e4e always make one pass and ignore this.",
                    },
                ),
            },
            "optional": {
                "generator": (
                    GENERATOR,
                    {
                        "tooltip": "The generator the encoder was trained with: Load Encoder's "
                        "generator output (read again from the file when not "
                        "connected). Not an adapted one: ReStyle compares its "
                        "renderings with the photo."
                    },
                ),
            },
        }

    def invert(self, encoder, images, n_iters, generator=None):
        device = bridge.torch_device()
        if generator is not None:  # (without one, the decoder is read from the encoder's file on the device)
            bridge.make_room(
                nada_memory.inversion_bytes(encoder, generator, images.shape[0]), device,
                advice="invert fewer images at once",
            )  # fmt: skip
        enc = nada_devices.on_device(encoder, device)
        G = nada_devices.on_device(generator, device) if generator is not None else None
        x = nada_inversion.prepare_face(nada_images.from_hwc(images), size=enc.input_size)
        total = n_iters if enc.spec.iterative else 1
        progress = bridge.Progress(total)

        def on_step(step, _total, current):
            progress.update(step, preview=nada_images.image_grid(current))

        def should_stop() -> bool:
            return progress.interrupted or bridge.interrupt_requested()

        result = nada_inversion.invert(
            enc,
            x,
            n_iters=total if enc.spec.iterative else None,
            generator=G,
            callback=on_step,
            should_stop=should_stop,
        )
        if result.n_iters < total:
            bridge.raise_if_interrupted()  # clears ComfyUI's flag if the progress hook did not
            raise bridge.interrupt_exception_type()()
        return (
            {"ws": result.latents, "seeds": None},
            nada_images.to_hwc(result.images).to(bridge.intermediate_device()),
        )


NADA_NODES = [LoadEncoder, InvertImage]
