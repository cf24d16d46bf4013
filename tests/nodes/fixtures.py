"""Test models for running the example workflows: a tiny generator, a micro CLIP, a style image.

Shared by the CI workflow tests (tests/nodes) and the real-ComfyUI integration test: both put these
files into a models folder and rewrite the workflows' model choices and sizes with `shrink_for_test`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import nada

ROOT = Path(__file__).resolve().parents[2]
GENERATOR_FILE = "tiny.safetensors"
STYLE_IMAGE = "nada_test_style.png"


def make_tiny_generator(nada, seed: int = 0):
    """A 16 px generator small enough to train for a few steps in well under a second."""
    torch.manual_seed(seed)
    cfg = nada.GeneratorConfig(img_resolution=16, channels=(32, 32, 16), z_dim=32, w_dim=32, mapping_layers=2)
    G = nada.Generator(cfg).eval().requires_grad_(False)
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping.estimate_w_avg(n=256))
    return G


def write_test_clip(folder: Path) -> tuple[Path, Path]:
    """The tests' micro CLIP (seeded random weights, tiny towers) as (weights, config json) in `folder`."""
    from tests.clip_fixtures import write_micro_clip

    config, weights, _ = write_micro_clip(folder)
    return weights, config


def tiny_clip_architecture() -> str:
    """The label the Load CLIP node gets for the test CLIP (its architecture comes from the config)."""
    return "test-clip"


def clip_weights_name() -> str:
    """The name the Load CLIP node lists for the test CLIP once installed in models/open_clip."""
    return "nada-test-clip.safetensors"


def style_image() -> np.ndarray:
    """A 32x32 RGB test pattern (stripes), as uint8 [H, W, 3]."""
    y, x = np.mgrid[0:32, 0:32]
    img = np.stack([(x * 8) % 256, ((x + y) * 4) % 256, np.where((x // 4) % 2, 230, 20)], axis=-1)
    return img.astype(np.uint8)


def install_test_models(pack, stylegan_dir: Path, base: Path) -> None:
    """Write the tiny generator to `stylegan_dir`, the micro CLIP to base/models/open_clip and the style
    image to base/input (ComfyUI's layout under --base-directory)."""
    stylegan_dir.mkdir(parents=True, exist_ok=True)
    G = make_tiny_generator(nada)
    nada.stylegan2.formats.save_generator(G, stylegan_dir / GENERATOR_FILE)
    clip_dir = base / "models" / "open_clip"
    weights, config = write_test_clip(base / "clip-src")
    clip_dir.mkdir(parents=True, exist_ok=True)
    dest = clip_dir / clip_weights_name()
    shutil.copyfile(weights, dest)
    shutil.copyfile(config, dest.with_suffix(".json"))
    (base / "input").mkdir(parents=True, exist_ok=True)
    Image.fromarray(style_image()).save(base / "input" / STYLE_IMAGE)


def shrink_for_test(prompt: dict[str, dict[str, Any]], base: Path | None = None, steps: int = 3) -> dict:
    """The same graph on the tiny models, with few steps, seeds and frames (runs in seconds on a CPU)."""
    return _rewrite(
        prompt,
        generator=GENERATOR_FILE,
        clip=(tiny_clip_architecture(), clip_weights_name()),
        image=STYLE_IMAGE,
        steps=steps,
        preview_every=1,
        frames=6,
        source_samples=4,
        project_steps=steps,
    )


def _rewrite(
    prompt: dict[str, dict[str, Any]],
    generator: str,
    clip: tuple[str, str],
    image: str,
    steps: int,
    preview_every: int,
    frames: int,
    source_samples: int,
    project_steps: int,
    texts: tuple[str, str] | None = None,
    adapt: dict[str, Any] | None = None,
) -> dict:
    """A copy of an API-format prompt with the models, sizes and output prefixes replaced (`adapt`:
    more NADA Adapt inputs to set)."""
    out = {}
    for nid, node in prompt.items():
        node = {**node, "inputs": dict(node["inputs"])}
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "NADA_LoadStyleGAN2":
            inputs["model_name"] = generator
        elif kind == "NADA_LoadCLIP":
            inputs["architecture"], inputs["weights"] = clip
        elif kind == "NADA_EncodePromptPair" and texts:
            inputs["source"], inputs["target"] = texts
        elif kind == "NADA_Adapt":
            inputs.update(adapt or {})
            inputs["steps"] = steps
            inputs["preview_every"] = preview_every
        elif kind == "NADA_ProjectImage":
            inputs["steps"] = project_steps
        elif kind == "NADA_InterpolateLatents":
            inputs["frames"] = min(inputs["frames"], frames)
        elif kind == "NADA_ImageDirection":
            inputs["source_samples"] = min(inputs.get("source_samples", source_samples), source_samples)
        elif kind == "LoadImage":
            inputs["image"] = image
        elif kind in ("SaveImage", "SaveAnimatedWEBP") and "filename_prefix" in inputs:
            inputs["filename_prefix"] = "test/" + inputs["filename_prefix"]
        out[nid] = node
    return out


# The demo world (bundled demo generator + tiny CLIP): the example workflows on models whose images
# mean something, for the canvas screenshots and for an end-to-end check that the text-guided graph
# really moves the images toward the target. The loaders list both models with nothing installed.
DEMO_GENERATOR_FILE = "nada-demo/shapes-32px.safetensors"
DEMO_CLIP_FILE = "nada-demo/tiny-clip.safetensors"
DEMO_STYLE_IMAGE = "nada_demo_blue_circle.png"


def demo_style_image() -> np.ndarray:
    """A blue circle on gray from the shapes world, 64x64 uint8 [H, W, 3] (the image-guided target)."""
    from nada.demo import world

    scene = world.Scene(
        shape="circle",
        colour="blue",
        background="gray",
        colour_rgb=world.SHAPE_COLOURS["blue"],
        background_rgb=world.BACKGROUNDS["gray"],
        cx=0.5,
        cy=0.5,
        radius=0.3,
        angle=0.0,
        blur=0.0,
        noise=0.0,
        noise_seed=0,
    )
    return np.asarray(world.render_pil(scene, 64))


def install_demo_style_image(base: Path) -> None:
    """The demo style image in base/input (the demo models need no installing)."""
    (base / "input").mkdir(parents=True, exist_ok=True)
    Image.fromarray(demo_style_image()).save(base / "input" / DEMO_STYLE_IMAGE)


def demo_world(prompt: dict[str, dict[str, Any]], steps: int = 60, project_steps: int = 100) -> dict:
    """The same graph on the demo world: "blue" -> "red" (or a blue-circle image), `steps` adaptation
    steps with the demo's batch and learning rate (`nada.demo.run.DEMO_SETTINGS`: with the paper's
    batch of 2 a run on these models is a lottery under float noise), `project_steps` projection steps."""
    from nada.demo.run import DEMO_SETTINGS

    return _rewrite(
        prompt,
        generator=DEMO_GENERATOR_FILE,
        clip=("tiny-clip", DEMO_CLIP_FILE),
        image=DEMO_STYLE_IMAGE,
        steps=steps,
        preview_every=max(1, steps // 6),
        frames=12,
        source_samples=8,
        project_steps=project_steps,
        texts=("blue", "red"),
        adapt={"batch": DEMO_SETTINGS["batch"], "learning_rate": DEMO_SETTINGS["lr"]},
    )
