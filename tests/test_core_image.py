"""The paper's resize rule (instruct-pix2pix edit_cli.py), worked by hand for a few sizes."""
from __future__ import annotations

import pytest

from ipx2p_core.image import keep_edit_size, original_edit_size


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        # square: factor 1, both sides 512
        ((512, 512), (512, 512)),
        # 768x512: factor 2/3 gives short 341.3 -> up to 384, factor 0.75; long 576 (not 512: the
        # original rounds the short side up first, so the long side can pass `resolution`)
        ((768, 512), (576, 384)),
        # portrait 700x1000: short 358.4 -> 384, factor 0.5486; long 548.6 -> floor 512
        ((700, 1000), (384, 512)),
        # small input is scaled up: 96x64 at 512 -> short 341.3 -> 384, long 576
        ((96, 64), (576, 384)),
    ],
)
def test_original_edit_size(size, expected):
    assert original_edit_size(*size, resolution=512) == expected


def test_original_edit_size_multiples_of_64():
    for width in range(64, 1500, 37):
        for height in (64, 333, 720, 1080):
            w, h = original_edit_size(width, height, 512)
            assert w % 64 == 0 and h % 64 == 0 and w >= 64 and h >= 64


def test_keep_edit_size():
    assert keep_edit_size(100, 61) == (96, 56)
    with pytest.raises(ValueError, match="at least 8x8"):
        keep_edit_size(7, 100)


def test_bad_sizes_rejected():
    with pytest.raises(ValueError):
        original_edit_size(0, 10)
    with pytest.raises(ValueError):
        original_edit_size(10, 10, resolution=32)
