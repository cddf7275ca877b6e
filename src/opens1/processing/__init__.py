"""Turning raw inputs into model inputs.

    images.py     load_image, dynamic_tiles, image_to_pixel_values (InternVL tiling, ImageNet norm)
    series.py     preprocess_series, series_num_tokens, read_wfdb (time-series tower inputs)
    processor.py  Processor: chat messages with images and series -> input_ids, pixel_values, ...

Submodules are imported on use so `import opens1.processing` stays cheap.
"""
