"""One loaded CLIP model: its network, tokenizer and own preprocessing, frozen."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import same_device
from ..errors import ClipError
from .precision import cast_network, resolve_precision
from .preprocess import clip_preprocess


class ClipModel:
    """One frozen open_clip model with its tokenizer and preprocessing.

    `name` labels the model in ensembles, directions and metadata. `image_size` is (H, W) of the
    model input; `mean`/`std`/`interpolation`/`resize_mode` are the model's own preprocessing.
    `source` records where it came from (architecture, pretrained tag, weights file, config).
    `precision` is the concrete precision of the network now; `requested_precision` what was asked
    ("auto" or a forced one), which `on` applies again on every device (see `nada.clip.precision`).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        name: str,
        image_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bicubic",
        resize_mode: str = "shortest",
        fill: float = 0.0,
        precision: str = "fp32",
        source: Mapping[str, Any] | None = None,
        requested_precision: str | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.interpolation = interpolation
        self.resize_mode = resize_mode
        self.fill = float(fill)
        self.precision = precision
        self.requested_precision = requested_precision or precision
        self.source = dict(source or {})
        self._embed_dim: int | None = None

    def __repr__(self) -> str:
        return (
            f"ClipModel({self.name!r}, input {self.image_size[0]}x{self.image_size[1]}, {self.precision}, "
            f"{self.device})"
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype inputs are cast to (the dtype of the image tower's weights)."""
        for m in self.model.visual.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                return m.weight.dtype
        return next(self.model.parameters()).dtype

    @property
    def embed_dim(self) -> int:
        if self._embed_dim is None:
            self._embed_dim = int(self.encode_text(["a"]).shape[-1])
        return self._embed_dim

    def preprocess(self, images: torch.Tensor, antialias: bool = True) -> torch.Tensor:
        """Generator images [B, 3, H, W] in [-1, 1] -> model input (see `clip_preprocess`), float32."""
        return clip_preprocess(
            images, self.image_size, self.mean, self.std, self.interpolation, self.resize_mode, self.fill, antialias
        )

    def encode_images(
        self, images: torch.Tensor, batch_size: int | None = None, antialias: bool = True
    ) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> [B, D] float32 unit embeddings; differentiable w.r.t. `images`.

        `batch_size` splits large batches to bound memory (gradients still flow through every chunk).
        """
        if images.ndim == 3:
            images = images[None]
        if images.shape[0] == 0:
            raise ClipError("no images to encode (the batch is empty)")
        step = batch_size or images.shape[0]
        out = []
        for i in range(0, images.shape[0], step):
            x = self.preprocess(images[i : i + step].to(self.device), antialias).to(self.dtype)
            out.append(self.model.encode_image(x).float())
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: str | Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Texts -> [N, D] float32 unit embeddings (no gradients; texts are constants of the losses)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ClipError("no texts to encode")
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[i : i + batch_size]).to(self.device)
            out.append(self.model.encode_text(tokens).float())
        return F.normalize(torch.cat(out), dim=-1)

    def member_weights(self) -> dict[str, float]:
        return {self.name: 1.0}

    def on(self, device: torch.device | str, precision: str | None = None) -> ClipModel:
        """This model on `device` in the precision the policy gives there (`requested_precision`, or
        `precision` when given): itself when nothing changes, else a moved and cast copy (this one is
        never moved nor cast: ComfyUI caches it). The one way a CLIP reaches its run device."""
        device = torch.device(device)
        requested = precision or self.requested_precision
        concrete = resolve_precision(requested, device)
        if same_device(self.device, device) and concrete == self.precision:
            return self
        with torch.inference_mode(False), torch.no_grad():
            other = copy.copy(self)
            other.model = copy.deepcopy(self.model).to(device)
            if concrete != self.precision:
                cast_network(other.model, concrete)
        other.precision, other.requested_precision = concrete, requested
        return other

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance (for metadata)."""
        return {"name": self.name, "precision": self.precision, "image_size": list(self.image_size), **self.source}
