"""The device-side paths, run on the CPU: JPEG bytes decoded by the decoder, uint8 inputs."""

from __future__ import annotations

import numpy as np
import torch
from test_cache import IMAGE_SIZE, _run, entries, photos  # noqa: F401 (fixture)

from benchmarks.images.gpu_decode import JpegDecoder
from benchmarks.stream import build_stream
from models.iqa import normalise, normalise_uint8


def test_decoder_output_matches_the_pillow_eval_path(photos):  # noqa: F811
    plain = build_stream(entries(photos), image_size=IMAGE_SIZE)
    raw = build_stream(entries(photos), image_size=IMAGE_SIZE, gpu_decode=True)
    decoder = JpegDecoder(IMAGE_SIZE, (0.5, 1.0), torch.device("cpu"))
    pil = plain.benchmark.test_stream[1].dataset.eval()
    jpeg = raw.benchmark.test_stream[1].dataset.eval()
    batch = jpeg.collate_fn([jpeg[i] for i in range(8)])
    x, failed = decoder(batch[0], train=False)
    assert failed == [] and x.dtype == torch.uint8 and x.shape == (8, 3, IMAGE_SIZE, IMAGE_SIZE)
    expected = torch.stack([pil[i][0] for i in range(8)])
    # Different decoders (libjpeg scaling vs full decode + resize): close, not equal.
    diff = (normalise_uint8(x) - normalise(expected)).abs()
    assert diff.mean() < 0.05, diff.mean()
    xt, _ = decoder(batch[0], train=True)
    assert xt.shape == x.shape


def test_a_bad_jpeg_in_a_batch_is_reported_not_fatal(photos, tmp_path):  # noqa: F811
    good = next((photos / "AVA" / "images").glob("*.jpg")).read_bytes()
    data = [torch.frombuffer(bytearray(good), dtype=torch.uint8),
            torch.frombuffer(bytearray(b"\xff\xd8 broken"), dtype=torch.uint8)]
    x, failed = JpegDecoder(IMAGE_SIZE, (0.5, 1.0), torch.device("cpu"))(data, train=False)
    assert failed == [1] and x.shape[0] == 2


def test_a_run_with_decode_gpu_on_the_training_device(photos, tmp_path):  # noqa: F811
    results = _run(photos, tmp_path / "r", "data.decode=gpu", "train.amp=true")
    assert np.isfinite(results["matrices"]["srcc"]).all()
    assert results["counts"]["AVA"]["unreadable"] == 0
