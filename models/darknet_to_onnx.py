"""Convert a Darknet ``.cfg`` + ``.weights`` pair into an ONNX graph with numpy and ``onnx.helper``.

The ``.cfg`` is parsed generically; supported sections are ``[net]``, ``[convolutional]`` (batch-norm
folded into the convolution's weights and bias), ``[maxpool]`` (Darknet's implicit right/bottom
padding, so the ``size=2 stride=1`` pool keeps its spatial size), ``[upsample]``, ``[route]`` and
``[yolo]``. Each ``[yolo]`` section becomes a graph output carrying the raw head tensor
``[batch, len(mask) * (5 + classes), H, W]``; the decoding (sigmoid/exp with the anchors) is left to
the runtime, which gets the anchors, masks and strides from the returned metadata. The batch
dimension is symbolic so callers can micro-batch, and so are the height and width: the network is fully
convolutional, so it runs on any multiple of its largest stride (the cfg's size is the default the metadata
names), e.g. shaped like the cameras' frames rather than square.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8
INPUT_NAME = "images"
BATCH_DIM = "batch"
HEIGHT_DIM, WIDTH_DIM = "height", "width"
# Darknet's normalize_cpu divides by (sqrt(variance) + .000001f), not sqrt(variance + eps).
DARKNET_BN_EPS = 1e-6
LEAKY_SLOPE = 0.1

SUPPORTED_SECTIONS = ("net", "convolutional", "maxpool", "upsample", "route", "yolo")


class DarknetConversionError(ValueError):
    """The .cfg/.weights pair uses something this converter does not support, or they disagree."""


@dataclass(frozen=True, slots=True)
class Section:
    """One ``[name]`` block of a Darknet .cfg with its ``key=value`` options."""

    name: str
    options: dict[str, str]
    line: int

    def get_int(self, key: str, default: int | None = None) -> int:
        if key not in self.options:
            if default is None:
                raise DarknetConversionError(f"[{self.name}] at line {self.line} needs '{key}'")
            return default
        return int(self.options[key])

    def get_ints(self, key: str) -> list[int]:
        if key not in self.options:
            raise DarknetConversionError(f"[{self.name}] at line {self.line} needs '{key}'")
        return [int(v) for v in self.options[key].split(",") if v.strip()]

    def get_str(self, key: str, default: str) -> str:
        return self.options.get(key, default)


def parse_cfg(text: str) -> list[Section]:
    """Parse Darknet .cfg text into its sections, in order (comments ``#``/``;`` dropped)."""
    sections: list[Section] = []
    current: Section | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = Section(name=line[1:-1].strip().lower(), options={}, line=lineno)
            sections.append(current)
            continue
        if current is None or "=" not in line:
            raise DarknetConversionError(f"cfg line {lineno}: unexpected {raw!r}")
        key, value = line.split("=", 1)
        current.options[key.strip()] = value.strip()
    if not sections or sections[0].name not in ("net", "network"):
        raise DarknetConversionError("cfg must start with a [net] section")
    return sections


@dataclass(frozen=True, slots=True)
class YoloHeadInfo:
    """What a runtime needs to decode one raw head output."""

    output: str
    grid: tuple[int, int]  # (H, W)
    stride: int
    mask: tuple[int, ...]
    anchors: tuple[tuple[float, float], ...]  # the masked anchors, in input pixels (w, h)
    num_classes: int

    def as_json(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "grid": list(self.grid),
            "stride": self.stride,
            "mask": list(self.mask),
            "anchors": [list(a) for a in self.anchors],
            "num_classes": self.num_classes,
        }


@dataclass(slots=True)
class ConversionResult:
    model: onnx.ModelProto
    input_size: tuple[int, int]  # (width, height)
    channels: int
    heads: list[YoloHeadInfo]
    all_anchors: list[tuple[float, float]]
    num_classes: int
    weights_header: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Tensor:
    name: str
    channels: int
    height: int
    width: int


class _WeightReader:
    def __init__(self, data: bytes) -> None:
        if len(data) < 12:
            raise DarknetConversionError("weights file is too short for a Darknet header")
        major, minor, revision = (int(v) for v in np.frombuffer(data, dtype="<i4", count=3))
        seen_size = 8 if major * 10 + minor >= 2 else 4
        seen_dtype = "<i8" if seen_size == 8 else "<i4"
        seen = int(np.frombuffer(data, dtype=seen_dtype, count=1, offset=12)[0])
        self.header = {"major": major, "minor": minor, "revision": revision, "seen": seen}
        self._data = data
        self._offset = 12 + seen_size

    def read(self, count: int) -> NDArray[np.float32]:
        end = self._offset + 4 * count
        if end > len(self._data):
            raise DarknetConversionError(
                f"weights file ended early: needed {end} bytes, have {len(self._data)} "
                "(cfg/weights mismatch?)"
            )
        values = np.frombuffer(self._data, dtype="<f4", count=count, offset=self._offset)
        self._offset = end
        return values.astype(np.float32)

    def remaining(self) -> int:
        return len(self._data) - self._offset


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, array: NDArray[Any]) -> str:
        self.initializers.append(numpy_helper.from_array(array, name=name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _activation(g: _GraphBuilder, kind: str, x: str, name: str, section: Section) -> str:
    if kind == "linear":
        return x
    if kind == "leaky":
        return g.node("LeakyRelu", [x], name, alpha=LEAKY_SLOPE)
    if kind == "relu":
        return g.node("Relu", [x], name)
    if kind == "logistic":
        return g.node("Sigmoid", [x], name)
    raise DarknetConversionError(f"[{section.name}] at line {section.line}: activation {kind!r} unsupported")


def _convolutional(g: _GraphBuilder, s: Section, index: int, x: _Tensor, weights: _WeightReader) -> _Tensor:
    filters = s.get_int("filters")
    size = s.get_int("size", 1)
    stride = s.get_int("stride", 1)
    padding = size // 2 if s.get_int("pad", 0) else s.get_int("padding", 0)
    if s.get_int("groups", 1) != 1 or s.get_int("dilation", 1) != 1:
        raise DarknetConversionError(f"[convolutional] at line {s.line}: groups/dilation unsupported")
    if s.get_int("batch_normalize", 0):
        beta, gamma, mean, var = (weights.read(filters).astype(np.float64) for _ in range(4))
        kernel = weights.read(filters * x.channels * size * size).reshape(filters, x.channels, size, size)
        # Fold in float64, store float32: y = gamma * (conv - mean) / (sqrt(var) + eps) + beta.
        scale = gamma / (np.sqrt(var) + DARKNET_BN_EPS)
        kernel = (kernel * scale[:, None, None, None]).astype(np.float32)
        bias = (beta - mean * scale).astype(np.float32)
    else:
        bias = weights.read(filters)
        kernel = weights.read(filters * x.channels * size * size).reshape(filters, x.channels, size, size)
    w_name = g.constant(f"l{index}_conv_w", kernel)
    b_name = g.constant(f"l{index}_conv_b", bias)
    out = g.node(
        "Conv",
        [x.name, w_name, b_name],
        f"l{index}_conv",
        kernel_shape=[size, size],
        strides=[stride, stride],
        pads=[padding] * 4,
    )
    out = _activation(g, s.get_str("activation", "logistic"), out, f"l{index}_act", s)
    return _Tensor(
        out,
        filters,
        (x.height + 2 * padding - size) // stride + 1,
        (x.width + 2 * padding - size) // stride + 1,
    )


def _maxpool(g: _GraphBuilder, s: Section, index: int, x: _Tensor) -> _Tensor:
    size = s.get_int("size", 1)
    stride = s.get_int("stride", size)
    # Darknet: out = (in + padding - size) / stride + 1, window offset -padding/2, padded cells ignored.
    padding = s.get_int("padding", size - 1)
    begin, end = padding // 2, padding - padding // 2
    if max(begin, end) >= size:
        raise DarknetConversionError(
            f"[maxpool] at line {s.line}: padding {padding} too large for size {size}"
        )
    out = g.node(
        "MaxPool",
        [x.name],
        f"l{index}_maxpool",
        kernel_shape=[size, size],
        strides=[stride, stride],
        pads=[begin, begin, end, end],
    )
    return _Tensor(
        out,
        x.channels,
        (x.height + padding - size) // stride + 1,
        (x.width + padding - size) // stride + 1,
    )


def _upsample(g: _GraphBuilder, s: Section, index: int, x: _Tensor) -> _Tensor:
    stride = s.get_int("stride", 2)
    if float(s.get_str("scale", "1")) != 1.0:
        raise DarknetConversionError(f"[upsample] at line {s.line}: scale != 1 unsupported")
    scales = g.constant(f"l{index}_scales", np.array([1, 1, stride, stride], dtype=np.float32))
    out = g.node(
        "Resize",
        [x.name, "", scales],
        f"l{index}_upsample",
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )
    return _Tensor(out, x.channels, x.height * stride, x.width * stride)


def _route(g: _GraphBuilder, s: Section, index: int, layers: list[_Tensor]) -> _Tensor:
    if "groups" in s.options:
        raise DarknetConversionError(f"[route] at line {s.line}: groups unsupported")
    sources = [layers[i if i >= 0 else index + i] for i in s.get_ints("layers")]
    if len({(t.height, t.width) for t in sources}) != 1:
        raise DarknetConversionError(f"[route] at line {s.line}: spatial sizes differ")
    if len(sources) == 1:
        return sources[0]
    out = g.node("Concat", [t.name for t in sources], f"l{index}_route", axis=1)
    return _Tensor(out, sum(t.channels for t in sources), sources[0].height, sources[0].width)


def convert(
    cfg_text: str, weights_data: bytes, mask_overrides: Mapping[int, Sequence[int]] | None = None
) -> ConversionResult:
    """Build the ONNX model (input ``images`` ``[batch, C, H, W]``) and its head metadata.

    ``mask_overrides`` maps a ``[yolo]`` section's index (0 = the first head in the cfg) to the anchor mask the
    weights were trained with, where the cfg that ships with them says otherwise.
    """
    overrides = dict(mask_overrides or {})
    sections = parse_cfg(cfg_text)
    net = sections[0]
    width, height, channels = net.get_int("width"), net.get_int("height"), net.get_int("channels", 3)
    weights = _WeightReader(weights_data)
    g = _GraphBuilder()
    x = _Tensor(INPUT_NAME, channels, height, width)
    layers: list[_Tensor] = []
    heads: list[YoloHeadInfo] = []
    all_anchors: list[tuple[float, float]] = []
    num_classes: int | None = None
    for index, s in enumerate(sections[1:]):
        if s.name == "convolutional":
            x = _convolutional(g, s, index, x, weights)
        elif s.name == "maxpool":
            x = _maxpool(g, s, index, x)
        elif s.name == "upsample":
            x = _upsample(g, s, index, x)
        elif s.name == "route":
            x = _route(g, s, index, layers)
        elif s.name == "yolo":
            classes = s.get_int("classes", 20)
            anchors_flat = [float(v) for v in s.get_str("anchors", "").split(",") if v.strip()]
            anchors = list(zip(anchors_flat[0::2], anchors_flat[1::2], strict=True))
            mask = s.get_ints("mask") if "mask" in s.options else list(range(len(anchors)))
            mask = list(overrides.pop(len(heads), mask))
            if any(not 0 <= m < len(anchors) for m in mask):
                raise DarknetConversionError(f"[yolo] at line {s.line}: mask {mask} outside the {len(anchors)} anchors")
            if x.channels != len(mask) * (5 + classes):
                raise DarknetConversionError(
                    f"[yolo] at line {s.line}: input has {x.channels} channels, "
                    f"expected {len(mask)} * (5 + {classes})"
                )
            if num_classes is not None and num_classes != classes:
                raise DarknetConversionError("[yolo] heads disagree on the number of classes")
            num_classes, all_anchors = classes, anchors
            if width % x.width or height % x.height or width // x.width != height // x.height:
                raise DarknetConversionError(f"[yolo] at line {s.line}: grid does not divide the input")
            name = f"head_stride{width // x.width}"
            if any(h.output == name for h in heads):
                name = f"{name}_{len(heads)}"
            g.node("Identity", [x.name], name)
            heads.append(
                YoloHeadInfo(
                    output=name,
                    grid=(x.height, x.width),
                    stride=width // x.width,
                    mask=tuple(mask),
                    anchors=tuple(anchors[m] for m in mask),
                    num_classes=classes,
                )
            )
        else:
            raise DarknetConversionError(
                f"[{s.name}] at line {s.line} unsupported (supported: {', '.join(SUPPORTED_SECTIONS)})"
            )
        layers.append(x)
    if weights.remaining() != 0:
        raise DarknetConversionError(
            f"{weights.remaining()} bytes of weights left over (cfg/weights mismatch?)"
        )
    if not heads or num_classes is None:
        raise DarknetConversionError("cfg has no [yolo] section")
    if overrides:
        raise DarknetConversionError(f"mask overrides for heads {sorted(overrides)} the cfg does not have")

    graph = helper.make_graph(
        g.nodes,
        "darknet",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, channels, HEIGHT_DIM, WIDTH_DIM])],
        [
            helper.make_tensor_value_info(
                h.output,
                TensorProto.FLOAT,
                [BATCH_DIM, len(h.mask) * (5 + h.num_classes), f"{h.output}_height", f"{h.output}_width"],
            )
            for h in heads
        ],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="v2x-suite darknet_to_onnx",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return ConversionResult(
        model=model,
        input_size=(width, height),
        channels=channels,
        heads=heads,
        all_anchors=all_anchors,
        num_classes=num_classes,
        weights_header=weights.header,
    )
