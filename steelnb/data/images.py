"""Image files: which files in a folder are images, reading one by its content, and the ImageNet
statistics every model input is normalised with.

Light on purpose (numpy and OpenCV only): the data layer, inference, the EDA and the plots read
images through here without pulling Lightning or albumentations in.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import SteelnbError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: per-channel RGB mean and standard deviation of ImageNet, on a 0-1 scale (what the encoders expect)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageError(SteelnbError):
    """An image file or folder is missing, unreadable or truncated; the message names it."""


def list_images(images_dir: str | Path) -> list[str]:
    """File names of the images in a folder, sorted."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ImageError(f"{images_dir}: image folder not found")
    return sorted(p.name for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image by its content (a PNG named .jpg works): uint8 RGB (H, W, 3).

    Grey images come back as three identical channels. Raises ``ImageError`` naming the
    file when it is missing, not an image, or truncated.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read image file ({e.strerror or e})") from None
    buf = np.frombuffer(data, dtype=np.uint8)
    # OpenCV decodes a truncated JPEG with a warning and grey fill: check the end marker first
    if data[:2] == b"\xff\xd8" and data.rstrip(b"\x00\r\n ")[-2:] != b"\xff\xd9":
        raise ImageError(f"{path}: truncated JPEG (no end-of-image marker); expected a complete image")
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if image is None:
        raise ImageError(f"{path}: not a readable image ({len(data)} bytes); expected a JPEG or PNG")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
