"""Dynamic tiling against an independent implementation of InternVL's dynamic_preprocess,
and pixel values against transformers' GotOcr2 (PIL) processor."""

import base64
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from opens1.config import VisionConfig, get_preset
from opens1.processing.images import (
    MAX_IMAGE_PIXELS,
    choose_grid,
    dynamic_tiles,
    image_size,
    image_to_pixel_values,
    load_image,
    num_tiles,
)


def reference_grid(width, height, tile, min_num, max_num):
    """InternVL's dynamic_preprocess grid choice, re-derived from its description: among all
    (cols, rows) with min_num <= cols*rows <= max_num, scanned by increasing tile count, keep the
    aspect ratio closest to W/H; on an exact tie a later (larger) grid replaces the current one
    only if W*H > 0.5 * tile^2 * cols*rows."""
    by_count = {}
    for n in range(min_num, max_num + 1):
        by_count[n] = [(c, n // c) for c in range(1, n + 1) if n % c == 0]
    best, best_diff = (1, 1), math.inf
    for n in sorted(by_count):
        for c, r in by_count[n]:
            d = abs(width / height - c / r)
            if d < best_diff or (d == best_diff and width * height > 0.5 * tile * tile * c * r):
                best, best_diff = (c, r), min(d, best_diff)
    return best


def image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


SIZES = [(448, 448), (896, 448), (448, 896), (1000, 1000), (1920, 1080), (300, 1200), (5000, 100), (123, 457),
         (1, 1), (641, 479), (2048, 2048), (800, 600)]


@pytest.mark.parametrize("max_tiles", [1, 4, 6, 12])
def test_grids_match_reference(max_tiles):
    for w, h in SIZES:
        assert choose_grid(w, h, 448, 1, max_tiles) == reference_grid(w, h, 448, 1, max_tiles), (w, h, max_tiles)
    # exhaustive sweep of shapes at a small tile size (exercises the tie rule a lot)
    for w in range(8, 200, 7):
        for h in range(8, 200, 11):
            assert choose_grid(w, h, 32, 1, max_tiles) == reference_grid(w, h, 32, 1, max_tiles), (w, h)
    assert choose_grid(1000, 300, 64, 2, 6) == reference_grid(1000, 300, 64, 2, 6)


def test_known_grids_thumbnail_and_token_counts():
    cfg = get_preset("intern-s1")  # 448 tiles, up to 12, thumbnail on
    v = cfg.vision
    assert cfg.image_tokens_per_tile == 256
    cases = {(448, 448): 1, (896, 448): 3, (1000, 1000): 10, (2048, 2048): 10, (5000, 100): 13}
    # square 1000^2: area > 0.5*448^2*9 -> the 3x3 grid wins the tie, plus a thumbnail
    assert choose_grid(1000, 1000, 448, 1, 12) == (3, 3)
    assert choose_grid(700, 700, 448, 1, 12) == (2, 2)  # 490000 > 0.5*448^2*4, not > 0.5*448^2*9
    assert choose_grid(600, 600, 448, 1, 12) == (1, 1)  # 360000 < 0.5*448^2*4
    assert choose_grid(5000, 100, 448, 1, 12) == (12, 1)
    for (w, h), n in cases.items():
        tiles = dynamic_tiles(image(w, h), 448, 1, 12, use_thumbnail=True)
        assert len(tiles) == n == num_tiles(w, h, v), (w, h)
        assert all(t.size == (448, 448) for t in tiles)
        assert len(tiles) * cfg.image_tokens_per_tile == n * 256
    assert len(dynamic_tiles(image(896, 448), 448, 1, 12, use_thumbnail=False)) == 2


def test_tiles_are_row_major_crops_and_thumbnail_is_whole_image():
    img = image(200, 100, seed=3)
    tiles = dynamic_tiles(img, 50, 1, 8, use_thumbnail=True)
    assert len(tiles) == 8 + 1  # 4x2 grid + thumbnail
    resized = np.asarray(img.resize((200, 100), Image.Resampling.BICUBIC))
    for k, t in enumerate(tiles[:8]):
        r, c = divmod(k, 4)
        np.testing.assert_array_equal(np.asarray(t), resized[r * 50:(r + 1) * 50, c * 50:(c + 1) * 50])
    np.testing.assert_array_equal(np.asarray(tiles[-1]), np.asarray(img.resize((50, 50), Image.Resampling.BICUBIC)))


def test_pixel_values_match_transformers_gotocr2():
    pil_proc = pytest.importorskip("transformers.models.got_ocr2.image_processing_pil_got_ocr2")
    v = get_preset("tiny").vision  # 112 px tiles, up to 4
    proc = pil_proc.GotOcr2ImageProcessorPil(
        size={"height": v.image_size, "width": v.image_size}, crop_to_patches=True, min_patches=v.min_tiles,
        max_patches=v.max_tiles, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )
    for w, h in [(300, 150), (112, 112), (90, 400), (500, 500)]:
        img = image(w, h, seed=w)
        want = proc(img, return_tensors="pt")
        got = image_to_pixel_values(img, v)
        assert got.shape[0] == int(want["num_patches"][0])
        torch.testing.assert_close(got, want["pixel_values"], atol=1e-5, rtol=0)


def test_normalisation_is_imagenet():
    v = VisionConfig(image_size=28, max_tiles=1)
    px = image_to_pixel_values(Image.new("RGB", (28, 28), (255, 0, 128)), v)
    assert px.shape == (1, 3, 28, 28)
    want = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    torch.testing.assert_close(px[0, :, 5, 5], torch.tensor(want), atol=1e-5, rtol=0)


def test_load_image_sources(tmp_path):
    img = image(20, 10)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    raw = buf.getvalue()
    path = tmp_path / "x.png"
    path.write_bytes(raw)
    url = "data:image/png;base64," + base64.b64encode(raw).decode()
    for src in (img, raw, str(path), path, url):
        out = load_image(src)
        assert out.mode == "RGB" and out.size == (20, 10)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(img))
    # grayscale is converted to RGB
    assert load_image(Image.new("L", (4, 4))).mode == "RGB"


def test_load_image_errors(tmp_path):
    with pytest.raises(ValueError, match="remote"):
        load_image("https://example.com/cat.png")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(b"definitely not an image")
    with pytest.raises(ValueError, match="base64"):
        load_image("data:image/png;base64,@@@not-base64@@@")
    with pytest.raises(ValueError, match="data URL"):
        load_image("data:image/png,rawdata")
    with pytest.raises(FileNotFoundError):
        load_image(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError):
        load_image(12345)
    with pytest.raises(ValueError):
        dynamic_tiles(image(10, 10), 0, 1, 4)
    with pytest.raises(ValueError):
        dynamic_tiles(image(10, 10), 8, 3, 2)


def test_presets_set_tile_size_and_limit():
    for name, size, limit in [("intern-s1", 448, 12), ("intern-s1-mini", 448, 12), ("tiny", 112, 4), ("debug", 56, 4)]:
        v = get_preset(name).vision
        assert (v.image_size, v.max_tiles) == (size, limit)
        px = image_to_pixel_values(image(3 * size, size), v)
        assert px.shape == (num_tiles(3 * size, size, v), 3, size, size)


def _rss() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _png(size, mode="1") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


def test_image_size_reads_the_header_only():
    raw = _png((640, 480), "RGB")
    header_only = raw[:100]  # the pixel data cut off: the size is still known, decoding fails
    assert image_size(header_only) == (640, 480)
    assert image_size("data:image/png;base64," + base64.b64encode(raw).decode()) == (640, 480)
    assert image_size(Image.new("RGB", (3, 2))) == (3, 2)
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(header_only)
    with pytest.raises(ValueError, match="not a readable image"):
        image_size(b"not an image at all")


def test_too_many_pixels_refused_before_decoding():
    # 100 M pixels in a 100 KB file: decoded to RGB it would be 300 MB
    bomb = _png((10_000, 10_000))
    assert len(bomb) < 200_000 and MAX_IMAGE_PIXELS == 40_000_000
    before = _rss()
    with pytest.raises(ValueError, match="too large: 10000x10000"):
        load_image(bomb)
    assert _rss() - before < 50 * 2**20
    with pytest.raises(ValueError, match="at most 1,000"):
        load_image(_png((50, 50), "RGB"), max_pixels=1000)
    assert load_image(_png((50, 50), "RGB"), max_pixels=None).size == (50, 50)
