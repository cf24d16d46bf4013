"""The Project Image node: a photo -> the generator's W+ latent (`nada.project`), with progress and cancel.

The latent it returns renders with the original generator (the reconstruction) and with any generator
adapted from it (the same picture in the new domain), through Render Latent.
"""

from __future__ import annotations

import logging
import time

import torch

from nada import devices as nada_devices
from nada import images as nada_images
from nada.adaptation import memory as nada_memory
from nada.inversion.project import SPACES, ProjectionProgress
from nada.inversion.project import project as project_images

from . import comfy_bridge as bridge
from .directions import _engine_images
from .sampling import _check_latent
from .types import CLIP, GENERATOR, LATENT

log = logging.getLogger(__name__)

NONE_CHOICE = "(none)"
PREVIEW_EVERY = 10  # steps between preview images on the node
TEXT_INTERVAL_S = 0.25


def _rgb(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE -> engine images [B, 3, H, W] in [-1, 1]; a grayscale or RGBA input is converted, and
    the node says so."""
    if image.ndim == 4 and image.shape[-1] in (1, 4):
        what = (
            "grayscale image: its channel is repeated to RGB" if image.shape[-1] == 1 else "RGBA image: alpha dropped"
        )
        log.warning("Project Image got a %s", what)
        bridge.send_text(f"converted a {what}")
    return _engine_images(image)


class ProjectImage:
    NODE_ID = "NADA_ProjectImage"
    DISPLAY_NAME = "Project Image (StyleGAN)"
    CATEGORY = "StyleGAN-NADA/inversion"
    DESCRIPTION = (
        "Finds the W+ latent whose image is your image by optimisation (NVIDIA's projector), for any "
        "generator. Render the latent with the adapted generator to see your image in the new domain. "
        "Uses LPIPS when VGG16 weights are in models/lpips, else pixels at several scales (plus CLIP when "
        "connected). Start from Invert Image's latent for faces: a few steps then refine it."
    )
    SEARCH_ALIASES = ["projector", "gan inversion", "image to latent", "photo to w", "project photo", "invert"]
    RETURN_TYPES = (LATENT, "IMAGE")
    RETURN_NAMES = ("latent", "reconstruction")
    OUTPUT_TOOLTIPS = (
        "One W+ latent per image; plug into Render Latent with the original or the adapted generator.",
        "The latents rendered with this generator, to judge the fit.",
    )
    FUNCTION = "project"

    @classmethod
    def INPUT_TYPES(cls):
        weights = [NONE_CHOICE, *bridge.list_files(bridge.PERCEPTUAL_FOLDER)]
        return {
            "required": {
                "generator": (
                    GENERATOR,
                    {"tooltip": "The generator to project into (the original, not the adapted one)."},
                ),
                "image": (
                    "IMAGE",
                    {
                        "tooltip": "Square images, ideally at the generator's resolution (others are "
                        "resized); for faces, aligned crops like the training data."
                    },
                ),
                "steps": (
                    "INT",
                    {
                        "default": 300,
                        "min": 0,
                        "max": 10000,
                        "step": 1,
                        "tooltip": "Optimisation steps: 100-300 from an encoder's latent, 500-1000 from scratch.",
                    },
                ),
                "space": (
                    list(SPACES),
                    {
                        "default": "w+",
                        "tooltip": (
                            "w+: one w per layer, closest reconstruction; w: one w per image, stays on the generator's "
                            "manifold, so adapted generators and edits behave better."
                        ),
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 2**63 - 1,
                        "step": 1,
                        "tooltip": "Seeds the random parts of the optimisation (the result repeats).",
                    },
                ),
            },
            "optional": {
                "latent_init": (
                    LATENT,
                    {"tooltip": "Start here instead of the average latent, e.g. Invert Image's output."},
                ),
                "clip": (
                    CLIP,
                    {"tooltip": "Adds the CLIP image-embedding distance to the loss (helps without LPIPS)."},
                ),
                "vgg16_weights": (
                    weights,
                    {
                        "default": NONE_CHOICE,
                        "tooltip": (
                            "torchvision's VGG16 weights (vgg16-397923af.pth) in models/lpips: the loss becomes VGG16 "
                            "features. (none) = pixels at several scales."
                        ),
                    },
                ),
                "lpips_weights": (
                    weights,
                    {
                        "default": NONE_CHOICE,
                        "tooltip": (
                            "The lpips package's vgg.pth in models/lpips: calibrates the VGG16 features into LPIPS "
                            "(needs vgg16_weights)."
                        ),
                    },
                ),
            },
        }

    def project(
        self,
        generator,
        image,
        steps,
        space,
        seed,
        latent_init=None,
        clip=None,
        vgg16_weights=NONE_CHOICE,
        lpips_weights=NONE_CHOICE,
    ):
        if image.ndim != 4 or image.shape[0] == 0:
            raise bridge.NodeError(f"Project Image needs at least one image; got an IMAGE of shape {list(image.shape)}")
        init = _check_latent(generator, latent_init) if latent_init is not None else None
        paths = []
        if vgg16_weights != NONE_CHOICE:
            paths.append(bridge.full_path(bridge.PERCEPTUAL_FOLDER, vgg16_weights))
        if lpips_weights != NONE_CHOICE:
            if not paths:
                raise bridge.NodeError("lpips_weights calibrates VGG16 features: choose vgg16_weights too")
            paths.append(bridge.full_path(bridge.PERCEPTUAL_FOLDER, lpips_weights))
        images = _rgb(image)
        node_id = bridge.current_node_id()
        progress = bridge.Progress(steps, node_id=node_id)
        last_text = [0.0]

        def on_step(p: ProjectionProgress) -> None:
            preview = None
            if p.step % PREVIEW_EVERY == 0 or p.step == p.total:
                preview = nada_images.image_grid(p.images[:16].float().cpu())
            progress.update(p.step, preview=preview)
            now = time.monotonic()
            if now - last_text[0] >= TEXT_INTERVAL_S or p.step == p.total:
                last_text[0] = now
                bridge.send_text(f"step {p.step}/{p.total} · loss {p.loss:.4f} · best {p.best:.4f}", node_id)

        def should_stop() -> bool:
            return progress.interrupted or bridge.interrupt_requested()

        device = bridge.torch_device()
        bridge.make_room(
            nada_memory.projection_bytes(generator, images.shape[0], clip, device), device,
            advice="project fewer images at once, or leave CLIP out",
        )  # fmt: skip
        G = nada_devices.on_device(generator, device)
        try:
            result = project_images(
                G,
                images,
                steps=steps,
                space=space,
                init=init,
                seed=seed,
                clip=clip,
                perceptual_weights=paths,
                callback=on_step,
                should_stop=should_stop,
            )
        finally:
            bridge.soft_empty_cache()
        if result.interrupted:
            bridge.send_text(f"cancelled after {result.steps}/{steps} steps", node_id)
            bridge.raise_if_interrupted()  # clears ComfyUI's flag if the progress hook did not
            raise bridge.interrupt_exception_type()()
        bridge.send_text(
            f"{result.steps} steps · {result.loss_name} loss {sum(result.losses) / len(result.losses):.4f}", node_id
        )
        recon = nada_images.to_hwc(result.images).to(bridge.intermediate_device())
        return ({"ws": result.latents, "seeds": None}, recon)


NADA_NODES = [ProjectImage]
