"""Checkpoint files in every supported format, written by the tests from our own generators.

The NVIDIA fixtures mimic the structure of real network pickles (persistent objects rebuilt by
`torch_utils.persistence._reconstruct_persistent_obj`, dnnlib EasyDicts, TensorFlow `Network` states
with numpy variables) using small stand-in classes of our own, registered under those module names
only while pickling. No NVIDIA code is involved.
"""

from __future__ import annotations

import collections
import contextlib
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch

from nada.stylegan2 import Generator, GeneratorConfig
from nada.stylegan2.ops import make_filter
from tests.stylegan2.checkpoint_writers import tf_pickle_bytes


def make_generator(seed: int = 0, **kw) -> Generator:
    base = dict(img_resolution=16, channels=(32, 16, 8), z_dim=16, w_dim=16, mapping_layers=2)
    base.update(kw)
    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(**base)).eval().requires_grad_(False)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith(("noise_strength", ".bias")):
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if ".affine." in name else 0.0))
        G.mapping.w_avg.copy_(torch.randn(G.config.w_dim) * 0.1)
    return G


@contextlib.contextmanager
def fake_modules(**modules: types.ModuleType):
    modules = dict(modules)
    for name in list(modules):
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            modules.setdefault(parent, types.ModuleType(parent))
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def _nvidia_modules():
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called: only referenced by name in the pickle
        raise AssertionError("fixture stand-in")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj

    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    util.EasyDict = EasyDict

    class Persistent:
        def __init__(self, class_name, state):
            self.class_name, self.state = class_name, state

        def __reduce__(self):
            meta = dict(
                type="class",
                version=6,
                module_src="# network source would be here\n",
                class_name=self.class_name,
                state=self.state,
            )
            return (_reconstruct_persistent_obj, (meta,))

    return persistence, util, EasyDict, Persistent


def nvidia_state(module: torch.nn.Module, Persistent, class_name: str, filter_names=()) -> object:
    params = collections.OrderedDict(
        (n, torch.nn.Parameter(p.detach().clone(), requires_grad=False))
        for n, p in module.named_parameters(recurse=False)
    )
    buffers = collections.OrderedDict((n, b.detach().clone()) for n, b in module.named_buffers(recurse=False))
    if class_name in ("SynthesisBlock", "SynthesisLayer", "Conv2dLayer"):
        buffers["resample_filter"] = make_filter()
    children = collections.OrderedDict()
    for n, child in module.named_children():
        cname = {"FullyConnected": "FullyConnectedLayer", "SkipConv": "Conv2dLayer"}.get(
            type(child).__name__, type(child).__name__
        )
        children[n] = nvidia_state(child, Persistent, cname)
    state = {
        "training": False,
        "_parameters": params,
        "_buffers": buffers,
        "_modules": children,
        "_non_persistent_buffers_set": set(),
    }
    return Persistent(class_name, state)


def write_nvidia_pkl(G: Generator, path, conv_clamp=None) -> None:
    persistence, util, EasyDict, Persistent = _nvidia_modules()
    c = G.config
    net = nvidia_state(G, Persistent, "Generator")
    net.state["_init_args"] = ()
    net.state["_init_kwargs"] = EasyDict(
        z_dim=c.z_dim,
        c_dim=c.c_dim,
        w_dim=c.w_dim,
        img_resolution=c.img_resolution,
        img_channels=3,
        mapping_kwargs=EasyDict(num_layers=c.mapping_layers),
        synthesis_kwargs=EasyDict(
            channel_base=1024, channel_max=32, num_fp16_res=0, conv_clamp=conv_clamp, architecture=c.architecture
        ),
    )
    d = Persistent(
        "Discriminator",
        {
            "_parameters": collections.OrderedDict(w=torch.nn.Parameter(torch.ones(2))),
            "_buffers": collections.OrderedDict(),
            "_modules": collections.OrderedDict(),
        },
    )
    data = {
        "G": net,
        "D": d,
        "G_ema": net,
        "augment_pipe": None,
        "training_set_kwargs": EasyDict(resolution=c.img_resolution),
    }
    with fake_modules(**{"torch_utils.persistence": persistence, "dnnlib.util": util}):
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=4)


def _tf_modules():
    network = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __init__(self, name, variables, components=None, static_kwargs=None):
            self.state = dict(
                version=4,
                name=name,
                static_kwargs=static_kwargs or {},
                components=components or {},
                build_module_src="# tf source\n",
                build_func_name=f"G_{name}",
                variables=list(variables.items()),
            )

        def __getstate__(self):
            return self.state

    Network.__module__ = "dnnlib.tflib.network"
    Network.__qualname__ = "Network"
    network.Network = Network
    return network, Network


def tf_variables(G: Generator):
    """G's tensors in the TensorFlow StyleGAN2 layout (the inverse of the documented conversion)."""
    p = {k: v.detach().numpy().astype(np.float32) for k, v in G.state_dict().items()}
    c = G.config
    mapping = {}
    for i in range(c.mapping_layers):
        mapping[f"Dense{i}/weight"] = p[f"mapping.fc{i}.weight"].T.copy()
        mapping[f"Dense{i}/bias"] = p[f"mapping.fc{i}.bias"]
    synth = {}
    noise_idx = 0
    for res in c.resolutions:
        o, t = f"synthesis.b{res}", f"{res}x{res}"
        if res == 4:
            synth[f"{t}/Const/const"] = p[f"{o}.const"][None]
            convs = [("Conv", "conv1", False)]
        else:
            convs = [("Conv0_up", "conv0", True), ("Conv1", "conv1", False)]
        for tf_name, ours, flip in convs:
            w = p[f"{o}.{ours}.weight"]
            w = w[:, :, ::-1, ::-1] if flip else w
            synth[f"{t}/{tf_name}/weight"] = w.transpose(2, 3, 1, 0).copy()
            synth[f"{t}/{tf_name}/mod_weight"] = p[f"{o}.{ours}.affine.weight"].T.copy()
            synth[f"{t}/{tf_name}/mod_bias"] = p[f"{o}.{ours}.affine.bias"] - 1
            synth[f"{t}/{tf_name}/bias"] = p[f"{o}.{ours}.bias"]
            synth[f"{t}/{tf_name}/noise_strength"] = np.float32(p[f"{o}.{ours}.noise_strength"])  # TF's 0-d value
            synth[f"noise{noise_idx}"] = p[f"{o}.{ours}.noise_const"][None, None]
            noise_idx += 1
        if f"{o}.torgb.weight" in p:
            synth[f"{t}/ToRGB/weight"] = p[f"{o}.torgb.weight"].transpose(2, 3, 1, 0).copy()
            synth[f"{t}/ToRGB/mod_weight"] = p[f"{o}.torgb.affine.weight"].T.copy()
            synth[f"{t}/ToRGB/mod_bias"] = p[f"{o}.torgb.affine.bias"] - 1
            synth[f"{t}/ToRGB/bias"] = p[f"{o}.torgb.bias"]
        if f"{o}.skip.weight" in p:
            synth[f"{t}/Skip/weight"] = p[f"{o}.skip.weight"].transpose(2, 3, 1, 0).copy()
    synth["lod"] = np.float32(0.0)
    return mapping, synth, {"dlatent_avg": p["mapping.w_avg"]}


def write_tf_pkl(G: Generator, path, protocol: int = 3) -> None:
    """A TensorFlow (G, D, Gs) pickle as TF wrote it (one writer: checkpoint_writers.tf_pickle_bytes)."""
    path = Path(path)
    path.write_bytes(tf_pickle_bytes(G, path.with_name(path.name + ".executed"), protocol=protocol))
