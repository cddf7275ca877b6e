"""Image loading and Intern-S1 / InternVL dynamic tiling.

    image (PIL / path / bytes / data URL)
      -> load_image: RGB PIL image
      -> dynamic_tiles: 1..max_tiles square tiles on the grid whose aspect ratio best fits
         the image, plus a whole-image thumbnail when there is more than one tile
      -> image_to_pixel_values: bicubic, /255, ImageNet mean/std -> FloatTensor[n_tiles, 3, S, S]

Design choices
- The grid choice reproduces InternVL's `dynamic_preprocess` exactly, including its
  tie rule (on equal aspect-ratio distance, a later, larger grid wins only if the image
  area exceeds half the grid's pixel area), because the token count of a prompt depends
  on it and the model was trained on it.
- PIL does the resizing (bicubic, as the released preprocessor_config's resample=3);
  numpy/torch do the normalisation. Each tile gives S/14 squared patches, i.e.
  `S1Config.image_tokens_per_tile` tokens after pixel shuffle.
- Remote URLs are refused: nothing is downloaded at run time. Callers fetch images
  themselves and pass bytes or a data URL.
- Size before pixels: `image_size` reads the width and height from the header (PIL opens
  lazily) and decoding refuses an image over `max_pixels` (default MAX_IMAGE_PIXELS, 40 M)
  before a single pixel is decoded, so a small compressed file cannot become gigabytes.
  A server budgets a whole request from the headers the same way (`serve/prepare.py`).
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from opens1.config import VisionConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_IMAGE_PIXELS = 40_000_000  # width x height; an RGB decode of this is 120 MB


def load_image(source, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """An RGB PIL image from a PIL image, a file path, raw bytes or a base64 data URL.

    http(s) URLs are refused (no downloads at run time); undecodable data, or an image of
    more than `max_pixels` pixels (checked from the header, before decoding; None: no
    limit but PIL's own) is a ValueError, a missing file a FileNotFoundError."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    raw, what = _raw_bytes(source)
    return _decode(raw, what, max_pixels)


def image_size(source) -> tuple[int, int]:
    """(width, height) of an image from its header alone: no pixel is decoded. Accepts what
    load_image accepts; unreadable data is a ValueError."""
    if isinstance(source, Image.Image):
        return source.size
    raw, what = _raw_bytes(source)
    return _open(raw, what).size


def _raw_bytes(source) -> tuple[bytes, str]:
    """The encoded image bytes of bytes, a data URL or a file path, and a name for errors."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "image bytes"
    if isinstance(source, Path):
        source = str(source)
    if not isinstance(source, str):
        raise ValueError(f"cannot load an image from a {type(source).__name__}; pass PIL, a path, bytes or a data URL")
    if source.startswith(("http://", "https://")):
        raise ValueError(
            f"remote image URLs are not fetched ({source[:60]!r}); download it yourself and pass bytes or a data URL"
        )
    if source.startswith("data:"):
        header, sep, payload = source.partition(",")
        if not sep or ";base64" not in header:
            raise ValueError("image data URL must look like 'data:image/png;base64,<data>'")
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"image data URL has invalid base64: {e}") from None
        return raw, "image data URL"
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"image file {source!r} does not exist")
    return path.read_bytes(), f"image file {source!r}"


def _open(raw: bytes, what: str) -> Image.Image:
    """The image, opened lazily: header read, pixels not decoded yet."""
    try:
        return Image.open(io.BytesIO(raw))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{what} is not a readable image: {e}") from None


def _decode(raw: bytes, what: str, max_pixels: int | None) -> Image.Image:
    img = _open(raw, what)
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        raise ValueError(f"{what} is too large: {w}x{h} = {w * h:,} pixels (at most {max_pixels:,})")
    try:
        img.load()  # decode now so corrupt data fails here, not later
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{what} is not a readable image: {e}") from None
    return img.convert("RGB")


def candidate_grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """(cols, rows) grids with min_tiles <= cols*rows <= max_tiles, sorted by tile count
    (stable, cols-major within a count: transformers' GotOcr2 order). InternVL's original
    sorts a set instead; the two orders only differ between same-count grids, whose
    ties are always won by a squarer grid when min_tiles == 1."""
    grids = [
        (cols, rows)
        for cols in range(1, max_tiles + 1)
        for rows in range(1, max_tiles + 1)
        if min_tiles <= cols * rows <= max_tiles
    ]
    return sorted(grids, key=lambda g: g[0] * g[1])


def choose_grid(width: int, height: int, tile_size: int, min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """The (cols, rows) grid whose aspect ratio is closest to width/height (InternVL rule)."""
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile_size * tile_size * cols * rows:
            # same shape fit: take the larger grid only when the image has the pixels to fill it
            best = (cols, rows)
    return best


def dynamic_tiles(
    image: Image.Image, tile_size: int, min_tiles: int = 1, max_tiles: int = 12, *, use_thumbnail: bool = True
) -> list[Image.Image]:
    """Split an image into tile_size squares on the best-fitting grid (row-major), plus a
    whole-image thumbnail when the grid has more than one tile and use_thumbnail is set."""
    if not 1 <= min_tiles <= max_tiles:
        raise ValueError(f"need 1 <= min_tiles <= max_tiles, got {min_tiles}, {max_tiles}")
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    width, height = image.size
    if width == 0 or height == 0:
        raise ValueError(f"image has an empty size {image.size}")
    cols, rows = choose_grid(width, height, tile_size, min_tiles, max_tiles)
    resized = image.resize((cols * tile_size, rows * tile_size), Image.Resampling.BICUBIC)
    tiles = [
        resized.crop((c * tile_size, r * tile_size, (c + 1) * tile_size, (r + 1) * tile_size))
        for r in range(rows)
        for c in range(cols)
    ]
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((tile_size, tile_size), Image.Resampling.BICUBIC))
    return tiles


def normalize_tiles(tiles: list[Image.Image], tile_size: int) -> torch.Tensor:
    """PIL tiles -> FloatTensor[n, 3, S, S], ImageNet-normalised (bicubic resize if needed)."""
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    arrays = []
    for tile in tiles:
        if tile.size != (tile_size, tile_size):
            tile = tile.resize((tile_size, tile_size), Image.Resampling.BICUBIC)
        a = np.asarray(tile.convert("RGB"), dtype=np.float32) / 255.0  # [S, S, 3]
        arrays.append((a - mean) / std)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def image_to_pixel_values(image, vision_cfg: VisionConfig, dynamic: bool = True) -> torch.Tensor:
    """One image (anything load_image accepts) -> FloatTensor[n_tiles, 3, S, S].

    dynamic=False gives a single resized tile (how InternVL treats video frames)."""
    img = load_image(image)
    s = vision_cfg.image_size
    if dynamic:
        tiles = dynamic_tiles(img, s, vision_cfg.min_tiles, vision_cfg.max_tiles,
                              use_thumbnail=vision_cfg.use_thumbnail)
    else:
        tiles = [img]
    return normalize_tiles(tiles, s)


def num_tiles(width: int, height: int, vision_cfg: VisionConfig) -> int:
    """How many tiles image_to_pixel_values makes for a width x height image (no pixels touched)."""
    cols, rows = choose_grid(width, height, vision_cfg.image_size, vision_cfg.min_tiles, vision_cfg.max_tiles)
    n = cols * rows
    return n + 1 if vision_cfg.use_thumbnail and n > 1 else n
