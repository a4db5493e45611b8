"""A plan image's type and size from its bytes (gateway.records.plans.image_info): PNG and JPEG are read, the
rest refused with a reason, and no bytes make it fail any other way."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.records.plans import ImageInfo, PlanError, image_info


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x80" * width * 3 for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def jpeg(width: int, height: int) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return bytes(data)


def test_png_and_jpeg_give_their_size() -> None:
    assert image_info(png(40, 30)) == ImageInfo("image/png", 40, 30)
    assert image_info(jpeg(64, 48)) == ImageInfo("image/jpeg", 64, 48)


@pytest.mark.parametrize(("data", "why"), [
    (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "PNG or JPEG"),
    (b"GIF89a....", "PNG or JPEG"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "damaged"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "damaged"),
    (b"\xff\xd8\x00\x00\x00\x00", "damaged"),
])
def test_other_or_damaged_files_are_refused_with_why(data: bytes, why: str) -> None:
    with pytest.raises(PlanError, match=why):
        image_info(data)


def test_an_absurd_size_is_refused() -> None:
    with pytest.raises(PlanError, match="pixels a side"):
        image_info(png(1, 1)[:16] + struct.pack(">II", 50_000, 10) + png(1, 1)[24:])


@given(st.binary(max_size=200))
def test_no_bytes_fail_any_other_way(data: bytes) -> None:
    try:
        image_info(b"\xff\xd8" + data)
        image_info(b"\x89PNG\r\n\x1a\n" + data)
    except PlanError:
        pass
