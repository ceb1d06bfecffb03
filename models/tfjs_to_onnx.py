"""Convert a TensorFlow.js graph model (``model.json`` + its weight shards) to ONNX with numpy and ``onnx.helper``.

No TensorFlow: the graph's nodes are translated one by one. Only the operations the converted detectors use are
known (Conv2D, Pad/PadV2, MaxPool, ResizeBilinear, ConcatV2, SplitV, Reshape, Transpose, Add/AddV2, LeakyRelu,
Sigmoid, Identity); any other operation is refused by name. Nodes whose inputs are all constants (the shape
arithmetic a TensorFlow export leaves behind, e.g. SparseToDense) are evaluated here instead.

TensorFlow's NHWC operations become the NCHW ONNX operation between two Transposes; onnxruntime's graph optimiser
removes the pairs that cancel (``optimize`` writes the result of its basic level, standard ONNX operators only).

Two things a TensorFlow.js export fixes at its traced input size are made size-independent, so the model runs at
any input size that is a multiple of its largest stride:

* ResizeBilinear's output size becomes a scale factor (its output size over its input size at the traced size);
* a Reshape that flattens the trailing (spatial) dimensions becomes ``[0, C, -1]``.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
NHWC_TO_NCHW = [0, 3, 1, 2]
NCHW_TO_NHWC = [0, 2, 3, 1]


class ConversionError(RuntimeError):
    pass


def load_weights(manifest: Sequence[Mapping[str, Any]], shards: Mapping[str, bytes]) -> dict[str, np.ndarray]:
    """The named tensors of a TensorFlow.js weights manifest. float16-quantised weights come back as float32."""
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        data = b"".join(shards[p] for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = [int(d) for d in spec["shape"]]
            count = math.prod(shape)
            quant = spec.get("quantization")
            if quant is None:
                dtype = {"float32": np.float32, "int32": np.int32}[spec["dtype"]]
                size = count * 4
                value = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
            elif quant["dtype"] == "float16":
                size = count * 2
                value = np.frombuffer(data, np.float16, count=count, offset=offset).astype(np.float32).reshape(shape)
            elif quant["dtype"] in ("uint8", "uint16"):
                qtype = np.uint8 if quant["dtype"] == "uint8" else np.uint16
                size = count * np.dtype(qtype).itemsize
                raw = np.frombuffer(data, qtype, count=count, offset=offset).astype(np.float32)
                value = (raw * np.float32(quant["scale"]) + np.float32(quant["min"])).reshape(shape)
            else:
                raise ConversionError(f"weight {spec['name']}: unknown quantisation {quant['dtype']}")
            out[spec["name"]] = np.array(value)
            offset += size
        if offset != len(data):
            raise ConversionError(f"weights manifest describes {offset} bytes, the shards hold {len(data)}")
    return out


def _attr(node: Mapping[str, Any], key: str) -> Any:
    value = node.get("attr", {}).get(key)
    if value is None:
        return None
    if "list" in value:
        return [int(i) for i in value["list"].get("i", [])]
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "f" in value:
        return float(value["f"])
    if "i" in value:
        return int(value["i"])
    if "b" in value:
        return bool(value["b"])
    return value


def _tensor_ref(name: str) -> str:
    """``node:0`` and ``node`` are the same tensor; ``node:1`` is a second output."""
    name = name.lstrip("^")
    return name[:-2] if name.endswith(":0") else name


@dataclass
class _Graph:
    """The ONNX graph under construction."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    counter: int = 0

    def const(self, name: str, value: np.ndarray) -> str:
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(value, name)
        return name

    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}__{self.counter}"

    def add(self, op: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **attrs: Any) -> None:
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=name, **attrs))


@dataclass(frozen=True, slots=True)
class InputSpec:
    """The ONNX input in front of the TensorFlow placeholder: its name, and the per-channel normalisation
    ``(x - mean) / std`` the model expects on 0..255 pixels (the export left it out of the graph)."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def convert(
    model_json: Mapping[str, Any],
    weights: Mapping[str, np.ndarray],
    input_spec: InputSpec,
    outputs: Mapping[str, str],
    traced_shapes: Mapping[str, Sequence[int]] | None = None,
) -> onnx.ModelProto:
    """Translate the graph. ``outputs`` maps the TensorFlow output tensors to the ONNX output names.
    ``traced_shapes`` (tensor -> static shape at the traced size, from a first pass) makes ResizeBilinear and the
    flattening Reshapes size-independent; without it they keep the traced sizes."""
    topology = model_json["modelTopology"]["node"]
    g = _Graph()
    consts: dict[str, np.ndarray] = {}
    placeholder: str | None = None
    for node in topology:
        if node["op"] == "Const":
            if node["name"] not in weights:
                raise ConversionError(f"constant {node['name']} has no weight in the manifest")
            consts[node["name"]] = weights[node["name"]]
    symbolic = traced_shapes is not None

    def value(ref: str) -> str:
        """A runtime tensor name for ``ref``; constants become initializers."""
        ref = _tensor_ref(ref)
        if ref in consts:
            return g.const(ref, consts[ref])
        return ref

    def const_of(ref: str) -> np.ndarray:
        ref = _tensor_ref(ref)
        if ref not in consts:
            raise ConversionError(f"{ref} must be a constant")
        return consts[ref]

    def nchw(op: str, x: str, out: str, name: str, extra_inputs: Sequence[str] = (), **attrs: Any) -> None:
        """Run an NCHW ONNX op on an NHWC tensor."""
        t_in, t_out = g.fresh(name + "_nchw"), g.fresh(name + "_out_nchw")
        g.add("Transpose", [x], [t_in], g.fresh(name + "_to_nchw"), perm=NHWC_TO_NCHW)
        g.add(op, [t_in, *extra_inputs], [t_out], name, **attrs)
        g.add("Transpose", [t_out], [out], g.fresh(name + "_to_nhwc"), perm=NCHW_TO_NHWC)

    for node in topology:
        op, name = node["op"], node["name"]
        inputs = [i for i in node.get("input", []) if not i.startswith("^")]
        if op == "Const":
            continue
        if op != "Placeholder" and inputs and all(_tensor_ref(i) in consts for i in inputs):
            consts[name] = _fold(op, [const_of(i) for i in inputs], node)
            continue
        if op == "Placeholder":
            placeholder = name
            mean = np.asarray(input_spec.mean, np.float32).reshape(1, 3, 1, 1)
            inv_std = (1.0 / np.asarray(input_spec.std, np.float32)).reshape(1, 3, 1, 1)
            centred = g.fresh("centred")
            g.add("Sub", [input_spec.name, g.const("input_mean", mean)], [centred], "normalise_mean")
            g.add("Mul", [centred, g.const("input_inv_std", inv_std)], [name], "normalise_std")
        elif op in ("Pad", "PadV2"):
            paddings = const_of(inputs[1]).astype(np.int64)
            pads = np.concatenate([paddings[:, 0], paddings[:, 1]])
            fill = float(const_of(inputs[2]).reshape(-1)[0]) if op == "PadV2" else 0.0
            g.add(
                "Pad",
                [value(inputs[0]), g.const(name + "/pads", pads), g.const(name + "/value", np.float32(fill))],
                [name],
                name,
                mode="constant",
            )
        elif op == "Transpose":
            g.add("Transpose", [value(inputs[0])], [name], name, perm=[int(p) for p in const_of(inputs[1])])
        elif op == "Conv2D":
            if _attr(node, "data_format") not in (None, "NHWC"):
                raise ConversionError(f"{name}: only NHWC Conv2D is supported")
            strides, dilations = _attr(node, "strides"), _attr(node, "dilations") or [1, 1, 1, 1]
            padding = _attr(node, "padding")
            if padding not in ("VALID", "SAME"):
                raise ConversionError(f"{name}: padding {padding} is not supported")
            kernel = const_of(inputs[1]).transpose(3, 2, 0, 1)  # HWIO -> OIHW
            nchw(
                "Conv",
                value(inputs[0]),
                name,
                name,
                [g.const(name + "/kernel", np.ascontiguousarray(kernel, np.float32))],
                strides=strides[1:3],
                dilations=dilations[1:3],
                auto_pad="VALID" if padding == "VALID" else "SAME_UPPER",
                kernel_shape=list(kernel.shape[2:]),
            )
        elif op == "MaxPool":
            if _attr(node, "padding") != "VALID":
                raise ConversionError(f"{name}: only VALID MaxPool is supported")
            nchw(
                "MaxPool",
                value(inputs[0]),
                name,
                name,
                kernel_shape=_attr(node, "ksize")[1:3],
                strides=_attr(node, "strides")[1:3],
            )
        elif op == "ResizeBilinear":
            if _attr(node, "align_corners") or not _attr(node, "half_pixel_centers"):
                raise ConversionError(f"{name}: only half-pixel-centre bilinear resizing is supported")
            size = const_of(inputs[1]).astype(np.int64)
            if symbolic:
                assert traced_shapes is not None
                in_h, in_w = traced_shapes[_tensor_ref(inputs[0])][1:3]
                scales = np.array([1.0, 1.0, size[0] / in_h, size[1] / in_w], np.float32)
                extra = [g.const(name + "/roi", np.zeros(0, np.float32)), g.const(name + "/scales", scales)]
            else:
                # The traced pass: the exported output size, with N and C taken from the input.
                extra = [
                    g.const(name + "/roi", np.zeros(0, np.float32)),
                    g.const(name + "/no_scales", np.zeros(0, np.float32)),
                    name + "/sizes",
                ]
                shape = g.fresh(name + "_shape")
                head = g.fresh(name + "_nc")
                g.add("Shape", [value(inputs[0])], [shape], g.fresh(name + "_shape_op"))
                g.add(
                    "Gather",
                    [shape, g.const(name + "/nc_idx", np.array([0, 3], np.int64))],
                    [head],
                    g.fresh(name + "_gather"),
                )
                g.add("Concat", [head, g.const(name + "/hw", size)], [name + "/sizes"], g.fresh(name + "_cat"), axis=0)
            nchw(
                "Resize",
                value(inputs[0]),
                name,
                name,
                extra,
                mode="linear",
                coordinate_transformation_mode="half_pixel",
            )
        elif op == "ConcatV2":
            axis = int(const_of(inputs[-1]))
            g.add("Concat", [value(i) for i in inputs[:-1]], [name], name, axis=axis)
        elif op == "SplitV":
            sizes = const_of(inputs[1]).astype(np.int64)
            axis = int(const_of(inputs[2]))
            outs = [name] + [f"{name}:{k}" for k in range(1, len(sizes))]
            g.add("Split", [value(inputs[0]), g.const(name + "/split", sizes)], outs, name, axis=axis)
        elif op == "Reshape":
            target = const_of(inputs[1]).astype(np.int64)
            if symbolic:
                assert traced_shapes is not None
                target = _size_independent_shape(traced_shapes[_tensor_ref(inputs[0])], target, name)
            g.add("Reshape", [value(inputs[0]), g.const(name + "/shape", target)], [name], name)
        elif op in ("Add", "AddV2"):
            g.add("Add", [value(inputs[0]), value(inputs[1])], [name], name)
        elif op == "LeakyRelu":
            g.add("LeakyRelu", [value(inputs[0])], [name], name, alpha=float(_attr(node, "alpha")))
        elif op == "Sigmoid":
            g.add("Sigmoid", [value(inputs[0])], [name], name)
        elif op == "Identity":
            g.add("Identity", [value(inputs[0])], [name], name)
        else:
            raise ConversionError(f"{name}: operation {op} is not supported by this converter")

    if placeholder is None:
        raise ConversionError("the graph has no input placeholder")
    for tf_name, onnx_name in outputs.items():
        g.add("Identity", [value(tf_name)], [onnx_name], "output_" + onnx_name)
    batch: str | int
    height: str | int
    width: str | int
    if symbolic:
        batch, height, width = "batch", "height", "width"
    else:
        batch, (height, width) = 1, _placeholder_hw(topology)
    graph = helper.make_graph(
        g.nodes,
        "tfjs_graph",
        [helper.make_tensor_value_info(input_spec.name, TensorProto.FLOAT, [batch, 3, height, width])],
        [
            helper.make_tensor_value_info(
                o, TensorProto.FLOAT, ["batch"] + [None] * (len(traced_shapes[o]) - 1) if traced_shapes else None
            )
            for o in outputs.values()
        ],
        initializer=list(g.initializers.values()),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="v2x tfjs_to_onnx")
    model.ir_version = 8
    return model


def _placeholder_hw(topology: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    for node in topology:
        if node["op"] == "Placeholder":
            dims = [int(d["size"]) for d in node["attr"]["shape"]["shape"]["dim"]]
            if len(dims) != 4 or dims[1] != 3:
                raise ConversionError(f"expected an NCHW image placeholder, got {dims}")
            return dims[2], dims[3]
    raise ConversionError("the graph has no input placeholder")


def _size_independent_shape(in_shape: Sequence[int], target: np.ndarray, name: str) -> np.ndarray:
    """``[N, C, H, W] -> [N, C, H*W]`` becomes ``[0, C, -1]``; a reshape that keeps every spatial dimension is
    left alone; anything else that depends on the input size is refused."""
    in_shape = [int(d) for d in in_shape]
    if list(target) == in_shape:
        return target
    if (
        len(in_shape) == 4
        and len(target) == 3
        and target[1] == in_shape[1]
        and target[2] in (in_shape[2] * in_shape[3], -1)
        and target[0] in (in_shape[0], -1, 0)
    ):
        return np.array([0, in_shape[1], -1], np.int64)
    raise ConversionError(f"{name}: cannot make reshape {in_shape} -> {list(target)} size-independent")


def _fold(op: str, args: Sequence[np.ndarray], node: Mapping[str, Any]) -> np.ndarray:
    """Evaluate a node whose inputs are all constants."""
    if op in ("Add", "AddV2"):
        return np.asarray(args[0] + args[1])
    if op == "SparseToDense":
        indices, shape, values, default = args
        dense = np.full(shape.astype(np.int64), default, dtype=values.dtype)
        idx = indices.astype(np.int64)
        if idx.ndim <= 1:
            dense[idx] = values
        else:
            dense[tuple(idx.T)] = values
        return dense
    if op == "Identity":
        return args[0]
    if op == "Cast":
        return args[0].astype({1: np.float32, 3: np.int32, 9: np.int64}.get(_attr(node, "DstT") or 1, np.float32))
    raise ConversionError(f"{node['name']}: cannot fold constant operation {op}")


def traced_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Static shapes of every tensor of a model built at its traced (fixed) input size."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = [d.dim_value for d in dims]
    return shapes


def optimize(model: onnx.ModelProto, work_dir: Path) -> onnx.ModelProto:
    """onnxruntime's basic (portable, standard-operator) graph optimisations: constant folding, Conv + Add fusion,
    cancelling Transpose pairs."""
    import onnxruntime as ort

    src, dst = work_dir / "naive.onnx", work_dir / "optimized.onnx"
    onnx.save(model, str(src))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(dst))


def read_model_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("format") != "graph-model":
        raise ConversionError(f"{path} is not a TensorFlow.js graph model")
    return data
