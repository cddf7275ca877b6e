"""Processor: OpenAI-style chat messages with images and time series -> model inputs.

    processor = Processor(tokenizer, config)
    batch = processor(messages)                 # input_ids [1, T], attention_mask, pixel_values, ...
    batch = processor.for_training(messages)    # + labels [1, T] (-100 outside assistant replies)

The conversation goes through Intern-S1's chat template (`opens1.tokenizer.chat`), whose
media placeholders are expanded here as transformers' InternS1Processor does:

    image  {"type": "image", "image": path | PIL | bytes | data URL}   (or OpenAI "image_url")
           -> <img> + <IMG_CONTEXT> x (tokens per tile x tiles) + </img>
              (InternVL dynamic tiling with thumbnail, `opens1.processing.images`)
    video  {"type": "video", "video": [frame, frame, ...]}   (frames as for images)
           -> "Frame1: <img>...</img>\nFrame2: <img>...</img>..." , one 448-pixel tile a frame
    series {"type": "time_series", "time_series": {"values": ..., "sampling_rate": ...}}
           -> <TS> + <TS_CONTEXT> x n + </TS>, n from the tower's own geometry
              (`opens1.processing.series`), so prompt expansion and the towers always agree.

The expansions are template text (their token strings become the tokens); message contents
keep control-token strings as text unless `special_tokens_in_content=True` (see chat.py).

Token ids: the model splices features at `config.image_token_id` / `config.ts_token_id`.
Those must be the tokenizer's `<IMG_CONTEXT>` / `<TS_CONTEXT>` ids. A config whose ids
are unset (0, as in the tiny presets) is configured in place by the constructor; a
config with different non-zero ids is an error. `configure(tokenizer, config)` does the
same explicitly (the speedrun builds its tiny model with it).
"""

from __future__ import annotations

import torch

from opens1.config import S1Config
from opens1.processing.images import image_to_pixel_values
from opens1.processing.series import preprocess_series, series_num_tokens
from opens1.tokenizer.chat import Segment, render_ids


def configure(tokenizer, config: S1Config) -> S1Config:
    """Set config's image/time-series token ids from the tokenizer (in place, returned).
    A clear error if the model's vocabulary cannot hold the tokenizer's ids."""
    if config.text.vocab_size < len(tokenizer):
        raise ValueError(
            f"config.text.vocab_size={config.text.vocab_size} is smaller than the tokenizer ({len(tokenizer)} ids); "
            "build the model with vocab_size >= len(tokenizer) (rounded up to a multiple of 64)"
        )
    config.image_token_id = tokenizer.token_to_id("<IMG_CONTEXT>")
    config.ts_token_id = tokenizer.token_to_id("<TS_CONTEXT>")
    return config


def _check_ids(tokenizer, config: S1Config) -> None:
    for field, token, needed in (
        ("image_token_id", "<IMG_CONTEXT>", config.vision is not None),
        ("ts_token_id", "<TS_CONTEXT>", config.timeseries is not None),
    ):
        if not needed:
            continue
        want = tokenizer.token_to_id(token)
        have = getattr(config, field)
        if have == 0:  # unset (tiny presets): take the tokenizer's
            setattr(config, field, want)
        elif have != want:
            raise ValueError(
                f"config.{field}={have} but the tokenizer's {token} is {want}: the model would splice features "
                f"at the wrong positions; call opens1.processing.processor.configure(tokenizer, config)"
            )


class Processor:
    def __init__(self, tokenizer, config: S1Config):
        self.tokenizer = tokenizer
        self.config = config
        _check_ids(tokenizer, config)
        sp = tokenizer.special_tokens
        self._img = (sp.get("<img>"), sp.get("<IMG_CONTEXT>"), sp.get("</img>"))
        self._ts = (sp.get("<TS>"), sp.get("<TS_CONTEXT>"), sp.get("</TS>"))

    def configure(self, config: S1Config | None = None) -> S1Config:
        """Write the tokenizer's media token ids into `config` (default: this processor's)."""
        return configure(self.tokenizer, config or self.config)

    # ------------------------------------------------------------ media

    def _vision(self, what: str) -> None:
        if self.config.vision is None:
            raise ValueError(f"the message has {what} but this model has no vision tower (config.vision is None)")
        if None in self._img:
            raise ValueError("the tokenizer lacks <img>, </img> or <IMG_CONTEXT>")

    def _tiles_text(self, n_tiles: int) -> str:
        return "<img>" + "<IMG_CONTEXT>" * (self.config.image_tokens_per_tile * n_tiles) + "</img>"

    def _image(self, part: dict, pixels: list[torch.Tensor]) -> str:
        self._vision("an image")
        if part.get("type") == "image_url":
            url = part.get("image_url")
            src = url.get("url") if isinstance(url, dict) else url
        else:
            src = part.get("image")
        if src is None:
            raise ValueError(f"image part without an image: {sorted(part)}")
        pv = image_to_pixel_values(src, self.config.vision)  # [n_tiles, 3, S, S]
        pixels.append(pv)
        return self._tiles_text(pv.shape[0])

    def _video(self, part: dict, pixels: list[torch.Tensor]) -> str:
        self._vision("a video")
        frames = part.get("video")
        if not isinstance(frames, (list, tuple)) or not frames:
            raise ValueError("a video part needs {'type': 'video', 'video': [frame, ...]} with at least one frame "
                             "(images; video files are not decoded)")
        lines = []
        for k, frame in enumerate(frames, 1):
            pixels.append(image_to_pixel_values(frame, self.config.vision, dynamic=False))  # [1, 3, S, S]
            lines.append(f"Frame{k}: " + self._tiles_text(1))
        return "\n".join(lines)

    def _series(self, part: dict, series: list[torch.Tensor], rates: list[float]) -> str:
        cfg = self.config.timeseries
        if cfg is None:
            raise ValueError("the message has a time series but this model has no time-series tower")
        if None in self._ts:
            raise ValueError("the tokenizer lacks <TS>, </TS> or <TS_CONTEXT>")
        ts = part.get("time_series")
        if not isinstance(ts, dict) or "values" not in ts:
            raise ValueError("a time_series part needs {'time_series': {'values': ..., 'sampling_rate': ...}}")
        x, sr = preprocess_series(ts["values"], ts.get("sampling_rate"), cfg.max_samples)  # x: [T, C]
        n = series_num_tokens(x.shape[0], sr, cfg)
        series.append(x)
        rates.append(sr)
        return "<TS>" + "<TS_CONTEXT>" * n + "</TS>"

    # ------------------------------------------------------------ public

    def _build(self, messages, tools, *, enable_thinking, add_generation_prompt, special_tokens_in_content):
        pixels: list[torch.Tensor] = []
        series: list[torch.Tensor] = []
        rates: list[float] = []

        def media(part: dict) -> list[Segment]:
            kind = part.get("type")
            if kind == "time_series":
                text = self._series(part, series, rates)
            elif kind == "video":
                text = self._video(part, pixels)
            else:
                text = self._image(part, pixels)
            return [Segment("owned", text)]

        ids, mask = render_ids(
            self.tokenizer, messages, tools, enable_thinking=enable_thinking,
            add_generation_prompt=add_generation_prompt, media=media,
            special_tokens_in_content=special_tokens_in_content,
        )  # fmt: skip
        input_ids = torch.tensor([ids], dtype=torch.long)  # [1, T]
        out = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.cat(pixels, 0) if pixels else None,  # [sum tiles, 3, S, S]
            "time_series": series or None,  # list of [T_i, C_i]
            "sampling_rates": rates or None,
        }
        return out, mask

    def __call__(self, messages, tools=None, *, enable_thinking: bool = True, add_generation_prompt: bool = True,
                 special_tokens_in_content: bool = False) -> dict:
        """Inference inputs for one conversation (by default the prompt ends with the generation prompt)."""
        return self._build(messages, tools, enable_thinking=enable_thinking,
                           add_generation_prompt=add_generation_prompt,
                           special_tokens_in_content=special_tokens_in_content)[0]

    def for_training(self, messages, tools=None, *, enable_thinking: bool = True) -> dict:
        """Training inputs with `labels` [1, T]: the assistant replies (reasoning, content, tool
        calls and their `<|im_end|>`) keep their ids; everything else is -100."""
        out, mask = self._build(messages, tools, enable_thinking=enable_thinking, add_generation_prompt=False,
                                special_tokens_in_content=False)
        labels = out["input_ids"].clone()
        labels[0, ~torch.tensor(mask, dtype=torch.bool)] = -100
        out["labels"] = labels
        return out
