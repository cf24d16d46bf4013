"""What the subcommands share: a progress line, reading generators and image folders."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import NadaError

DEVICE_HELP = "auto, cpu, cuda, cuda:1, ..."


class ProgressLine:
    """A plain-text progress line on stderr: redrawn in place on a terminal, every ~5 % otherwise."""

    def __init__(self, total: int, stream=None):
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.last_pct = -1

    def __call__(self, p) -> None:
        eta = (p.total - p.step) / p.it_per_s if p.it_per_s > 0 else float("nan")
        layers = f"  W+ {list(p.w_indices)}" if p.w_indices is not None else ""
        text = f"step {p.step}/{p.total}  loss {p.loss:.4f}  {p.it_per_s:.2f} it/s  eta {duration(eta)}{layers}"
        if self.tty:
            self.stream.write("\r" + text + " " * 4)
            if p.step == p.total:
                self.stream.write("\n")
        else:
            pct = int(100 * p.step / self.total) // 5
            if pct != self.last_pct or p.step == p.total:
                self.stream.write(text + "\n")
                self.last_pct = pct
        self.stream.flush()


def duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def read_images(folder: str) -> list:
    """The images of a folder (png/jpg/webp/bmp, sorted by name) as RGB PIL images."""
    from PIL import Image

    exts = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
    files = sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in exts) if Path(folder).is_dir() else []
    if not files:
        raise NadaError(f"no images (png/jpg/webp/bmp) in {folder}")
    return [Image.open(f).convert("RGB") for f in files]
