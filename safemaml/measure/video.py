"""Short clips for a reader's eye: frames laid side by side under text, written as GIF or MP4.

GIF needs only Pillow (a dependency of matplotlib, and of safemaml); MP4 needs PyAV, whose wheel ships
FFmpeg with its H.264 encoder (the extra `safemaml[render]`). Text is drawn with Pillow's built-in
font, so no font file is looked up on the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from safemaml.checks import check_output_file
from safemaml.errors import SafeMamlError
from safemaml.files import os_errors

VIDEO_FORMATS = (".gif", ".mp4")
INK, WARN, PAPER = (20, 20, 20), (200, 30, 30), (255, 255, 255)
GAP = 4  # pixels of paper between panels


def check_video_path(out: Path, overwrite: bool = False) -> None:
    """Refuse, before any work, a name that cannot be written: unknown format, a folder, a missing folder,
    an existing file (unless `overwrite`), or .mp4 without PyAV."""
    check_output_file(out, VIDEO_FORMATS, "clip", "clip.gif", joiner=" or ")
    if out.exists() and not overwrite:
        raise SafeMamlError(f"--out {out} exists; choose another name or pass --overwrite to replace it")
    if out.suffix.lower() == ".mp4" and not mp4_available():
        raise SafeMamlError(f"--out {out}: MP4 needs PyAV (pip install 'safemaml[render]'); a .gif needs nothing")


def mp4_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` pixels (a scalable one where Pillow has FreeType)."""
    return ImageFont.load_default(size=size)


def text_band(width: int, lines: Sequence[tuple[str, tuple[int, int, int]]], size: int) -> np.ndarray:
    """A white strip [h, width, 3] holding `lines` (text, colour), one under the other."""
    step = size + max(2, size // 4)
    image = Image.new("RGB", (width, step * len(lines) + 4), PAPER)
    draw, face = ImageDraw.Draw(image), font(size)
    for i, (text, colour) in enumerate(lines):
        draw.text((4, 2 + i * step), text, fill=colour, font=face)
    return np.asarray(image)


def side_by_side(panels: Sequence[np.ndarray], captions: Sequence[Sequence[tuple[str, tuple[int, int, int]]]],
                 header: Sequence[tuple[str, tuple[int, int, int]]], size: int) -> np.ndarray:
    """One frame: a header across the top, then each panel [h, w, 3] under its caption, GAP pixels apart."""
    columns = [np.concatenate([text_band(p.shape[1], c, size), p]) for p, c in zip(panels, captions, strict=True)]
    height = max(c.shape[0] for c in columns)
    gap = np.full((height, GAP, 3), PAPER, dtype=np.uint8)
    row: list[np.ndarray] = []
    for column in columns:
        padded = np.concatenate([column, np.full((height - column.shape[0], column.shape[1], 3), PAPER, np.uint8)])
        row += [gap, padded] if row else [padded]
    body = np.concatenate(row, axis=1)
    return np.concatenate([text_band(body.shape[1], header, size), body])


def write_video(out: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write the frames (equal-sized [h, w, 3] uint8) to `out` (.gif or .mp4) through a temporary file
    renamed at the end, so `out` is never half-written; returns the number of frames."""
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    try:
        with os_errors(out):
            count = (_write_mp4 if out.suffix.lower() == ".mp4" else _write_gif)(tmp, frames, fps)
            os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def _write_gif(path: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """All frames on the first frame's palette (no dithering: flat colours compress well); GIF counts
    time in hundredths of a second, so the frame time is rounded to 10 ms."""
    images: list[Image.Image] = []
    for frame in frames:
        image = Image.fromarray(frame)
        if not images:
            images.append(image.quantize(colors=96, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
        else:
            images.append(image.quantize(palette=images[0], dither=Image.Dither.NONE))
    if not images:
        raise SafeMamlError("no frames to write")
    duration = max(20, round(100 / fps) * 10)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0,
                   optimize=True)
    return len(images)


def _write_mp4(path: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """H.264 in yuv420p (what browsers play), the picture padded to even sides as that format needs."""
    from fractions import Fraction

    import av

    count = 0
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "28"}
        for frame in frames:
            h, w = frame.shape[:2]
            if count == 0:
                stream.width, stream.height = w + w % 2, h + h % 2
            even = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=255)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(even), format="rgb24")))
            count += 1
        if count == 0:
            raise SafeMamlError("no frames to write")
        container.mux(stream.encode(None))
    return count
