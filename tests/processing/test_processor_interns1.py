"""Processor with an Intern-S1 tokenizer directory: the ids of transformers' pipeline.

Reference, per conversation: the real chat_template.jinja rendered by transformers'
`render_jinja_template`; its `<IMG_CONTEXT>` / `<video>` placeholders expanded as
transformers' InternS1Processor does (`<img>` + `<IMG_CONTEXT>` x 256 x tiles + `</img>`, tiles
counted by transformers' GotOcr2 image processor with crop_to_patches; a video becomes
`Frame{k}: <img>...</img>` lines joined by newlines, one tile a frame); then the reference
InternS1 tokenizer (tests/tokenizer/interns1_reference.py). Vision geometry as Intern-S1's:
448-pixel tiles, up to 12 plus a thumbnail, 256 tokens a tile."""

import pytest
import torch
from PIL import Image

from opens1.config import get_preset
from opens1.processing.processor import Processor
from opens1.tokenizer import load_tokenizer
from tests.tokenizer.chat_cases import MEDIA_CASES, TEXT_CASES, with_files
from tests.tokenizer.interns1_fixture import DATA, make_interns1_dir, small_vocab_merges
from tests.tokenizer.interns1_reference import ReferenceInternS1

render_jinja_template = pytest.importorskip("transformers.utils.chat_template_utils").render_jinja_template
got_ocr2 = pytest.importorskip("transformers.models.got_ocr2.image_processing_pil_got_ocr2")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("s1proc")
    make_interns1_dir(root / "tok", *small_vocab_merges())
    tok = load_tokenizer(root / "tok")
    cfg = get_preset("tiny").replace(timeseries=None)
    cfg.vision.image_size, cfg.vision.max_tiles = 448, 12
    cfg.text.vocab_size = (len(tok) + 63) // 64 * 64
    assert cfg.image_tokens_per_tile == 256
    files = {}
    for name, (w, h) in {"IMAGE_A": (900, 450), "IMAGE_B": (300, 700), "FRAME_1": (320, 240),
                         "FRAME_2": (320, 240), "FRAME_3": (640, 480)}.items():
        img = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        files[name] = str(root / f"{name}.png")
        img.save(files[name])
    return tok, ReferenceInternS1(root / "tok"), cfg, files


def reference_ids(ref, messages, kw, cfg):
    text = render_jinja_template([messages], chat_template=(DATA / "chat_template.jinja").read_text(encoding="utf-8"),
                                 tools=kw.get("tools"), enable_thinking=kw.get("enable_thinking", True),
                                 add_generation_prompt=kw.get("add_generation_prompt", True))[0][0]
    v = cfg.vision
    proc = got_ocr2.GotOcr2ImageProcessorPil(size={"height": v.image_size, "width": v.image_size}, crop_to_patches=True,
                                             min_patches=v.min_tiles, max_patches=v.max_tiles)
    per_tile = cfg.image_tokens_per_tile
    expansions = []
    for m in messages:
        for part in m["content"] if isinstance(m["content"], list) else []:
            if part["type"] == "image":
                tiles = int(proc(Image.open(part["image"]).convert("RGB"), return_tensors="pt")["num_patches"][0])
                expansions.append(("<IMG_CONTEXT>", "<img>" + "<IMG_CONTEXT>" * per_tile * tiles + "</img>"))
            elif part["type"] == "video":
                frames = [f"Frame{k + 1}: <img>" + "<IMG_CONTEXT>" * per_tile + "</img>" for k in range(len(part["video"]))]
                expansions.append(("<video>", "\n".join(frames)))
    for placeholder, _ in expansions:  # each placeholder once, in order, as InternS1Processor does
        text = text.replace(placeholder, "<placeholder>", 1)
    for _, expansion in expansions:
        text = text.replace("<placeholder>", expansion, 1)
    return ref.encode(text), text


@pytest.mark.parametrize("name, messages, kw", MEDIA_CASES, ids=[c[0] for c in MEDIA_CASES])
def test_media_conversations_match_transformers(setup, name, messages, kw):
    tok, ref, cfg, files = setup
    messages = with_files(messages, files)
    out = Processor(tok, cfg)(messages, tools=kw.get("tools"), enable_thinking=kw.get("enable_thinking", True),
                              add_generation_prompt=kw.get("add_generation_prompt", True))
    want, text = reference_ids(ref, messages, kw, cfg)
    assert out["input_ids"][0].tolist() == want
    n_ctx = text.count("<IMG_CONTEXT>")
    assert out["pixel_values"].shape[0] * cfg.image_tokens_per_tile == n_ctx
    assert int((out["input_ids"] == cfg.image_token_id).sum()) == n_ctx


def test_text_conversations_match_transformers(setup):
    tok, ref, cfg, _ = setup
    proc = Processor(tok, cfg)
    for name, messages, kw in TEXT_CASES:
        want, _ = reference_ids(ref, messages, kw, cfg)
        got = proc(messages, tools=kw.get("tools"), enable_thinking=kw.get("enable_thinking", True),
                   add_generation_prompt=kw.get("add_generation_prompt", True))["input_ids"][0].tolist()
        assert got == want, name


def test_video_pixels_are_one_tile_per_frame(setup):
    tok, _, cfg, files = setup
    msgs = [{"role": "user", "content": [{"type": "video", "video": [files["FRAME_1"], files["FRAME_3"]]}]}]
    out = Processor(tok, cfg)(msgs)
    assert tuple(out["pixel_values"].shape) == (2, 3, 448, 448)
    text = tok.decode(out["input_ids"][0].tolist())
    assert "Frame1: <img>" in text and "</img>\nFrame2: <img>" in text
    with pytest.raises(ValueError, match="frame"):
        Processor(tok, cfg)([{"role": "user", "content": [{"type": "video", "video": "clip.mp4"}]}])


def test_training_labels_with_images(setup):
    tok, _, cfg, files = setup
    msgs = with_files(MEDIA_CASES[-1][1], files)
    out = Processor(tok, cfg).for_training(msgs)
    labels = out["labels"][0]
    assert (labels == cfg.image_token_id).sum() == 0  # image tokens are never trained on
    kept = [int(i) for i in labels if i != -100]
    assert tok.decode(kept) == "<think>\nlook\n</think>\nA gradient.<|im_end|>"
    assert isinstance(out["input_ids"], torch.Tensor)
