"""Run an API-format prompt through our node classes, without ComfyUI, the way ComfyUI's executor does.

Nodes run in dependency order inside `torch.inference_mode()` (as ComfyUI runs every node), outputs
are passed along links, and a node returning {"ui": ..., "result": ...} is unpacked. The few core
nodes our example workflows use are handled here: LoadImage yields a test-provided image, and the
output nodes (PreviewImage, SaveImage, SaveAnimatedWEBP) record the IMAGE batch they receive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# The core nodes our example workflows use, as ComfyUI 0.3.x reports them in /object_info (only the
# interface: input names, types and limits). The integration test checks them against a real server.
CORE_NODE_DEFS: dict[str, dict[str, Any]] = {
    "PreviewImage": {
        "input": {"required": {"images": ("IMAGE", {})}},
        "output": [],
        "output_name": [],
        "output_node": True,
    },
    "SaveImage": {
        "input": {"required": {"images": ("IMAGE", {}), "filename_prefix": ("STRING", {"default": "ComfyUI"})}},
        "output": [],
        "output_name": [],
        "output_node": True,
    },
    "SaveAnimatedWEBP": {
        "input": {
            "required": {
                "images": ("IMAGE", {}),
                "filename_prefix": ("STRING", {"default": "ComfyUI"}),
                "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}),
                "lossless": ("BOOLEAN", {"default": True}),
                "quality": ("INT", {"default": 80, "min": 0, "max": 100}),
                "method": (["default", "fastest", "slowest"], {}),
            }
        },
        "output": [],
        "output_name": [],
        "output_node": True,
    },
    "LoadImage": {
        # The real combo lists the files in input/; any name is accepted here.
        "input": {"required": {"image": ("STRING", {"default": "example.png"})}},
        "output": ["IMAGE", "MASK"],
        "output_name": ["IMAGE", "MASK"],
        "output_node": False,
    },
}
SINKS = ("PreviewImage", "SaveImage", "SaveAnimatedWEBP")


@dataclass
class Run:
    outputs: dict[str, tuple] = field(default_factory=dict)  # node id -> its outputs
    ui: dict[str, dict] = field(default_factory=dict)  # node id -> its UI dict
    sink_images: dict[str, torch.Tensor] = field(default_factory=dict)  # output-node id -> IMAGE it got
    order: list[str] = field(default_factory=list)


def _order(prompt: dict[str, dict[str, Any]]) -> list[str]:
    done: list[str] = []
    seen: set[str] = set()

    def visit(nid: str, stack: tuple[str, ...] = ()) -> None:
        if nid in seen:
            return
        if nid in stack:
            raise ValueError(f"cycle through node {nid}")
        for value in prompt[nid]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                visit(value[0], stack + (nid,))
        seen.add(nid)
        done.append(nid)

    for nid in sorted(prompt, key=int):
        visit(nid)
    return done


def run_prompt(
    prompt: dict[str, dict[str, Any]],
    node_classes: dict[str, type],
    load_image: dict[str, torch.Tensor] | None = None,
) -> Run:
    """Execute `prompt`; `load_image` maps a LoadImage file name to the IMAGE it should yield."""
    run = Run()
    instances: dict[str, Any] = {}
    with torch.inference_mode():
        for nid in _order(prompt):
            node = prompt[nid]
            kind = node["class_type"]
            kwargs = {}
            for name, value in node["inputs"].items():
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                    kwargs[name] = run.outputs[value[0]][value[1]]
                else:
                    kwargs[name] = value
            if kind in SINKS:
                run.sink_images[nid] = kwargs["images"]
                run.outputs[nid] = ()
            elif kind == "LoadImage":
                image = (load_image or {})[kwargs["image"]]
                run.outputs[nid] = (image, torch.zeros(image.shape[:3]))
            else:
                cls = node_classes[kind]
                obj = instances.setdefault(nid, cls())
                result = getattr(obj, cls.FUNCTION)(**kwargs)
                if isinstance(result, dict):
                    run.ui[nid] = result.get("ui", {})
                    result = result.get("result", ())
                run.outputs[nid] = tuple(result)
            run.order.append(nid)
    return run
