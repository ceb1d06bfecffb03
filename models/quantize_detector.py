"""Quantise the roadside detector to int8: onnxruntime static quantisation, QDQ, per-channel weights.

    python models/quantize_detector.py [--model models/build/yolov3-tiny.onnx] [--frames 96]

Calibrated on real frames only: the simulator's photo-style frames (roadside_sim/detection_set.py, seed
CALIBRATION_SEED, never the evaluation seed) and the Darknet sample photos, each letterboxed exactly as the service
does (``Detector.preprocess``). Random tensors are known to wreck every detection, so they are never used.

Writes ``<model>-int8.onnx`` and ``<model>-int8.json`` beside the fp32 model (the same metadata with the new file,
its sha256 and how it was quantised). The result is deterministic for the same inputs and onnxruntime version.
The service uses it when ``V2X_ROADSIDE_DETECTOR_PRECISION=int8`` (services/roadside/settings.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository's packages

from roadside_sim.detection_set import CALIBRATION_SEED, real_photos, sim_frames  # noqa: E402
from services.roadside.detector import Detector, DetectorConfig  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "build" / "yolov3-tiny.onnx"
# The detection heads' last 1x1 convolutions stay float: their outputs are logits whose extremes (objectness far
# below zero on the background) set the quantisation range and leave few levels for the boxes that matter.
KEEP_FLOAT_OUTPUT_CONVS = True
CALIBRATION = CalibrationMethod.MinMax
# Weights in 7 bits: on x86 CPUs without VNNI (AVX2 only, e.g. the AMD EPYC CI machines) onnxruntime multiplies
# uint8 activations by int8 weights with VPMADDUBSW, whose int16 pair sums saturate at full 8-bit weights; there the
# int8 model lost dog.jpg's pickup (found at 0.64 by fp32). A machine with VNNI computes the same either way.
REDUCE_RANGE = True


class FrameReader(CalibrationDataReader):
    """Feeds letterboxed real frames to the calibrator, one per run."""

    def __init__(self, input_name: str, tensors: list[np.ndarray[Any, Any]]) -> None:
        self._input_name = input_name
        self._iter: Iterator[np.ndarray[Any, Any]] = iter(tensors)

    def get_next(self) -> dict[str, np.ndarray[Any, Any]] | None:
        tensor = next(self._iter, None)
        return None if tensor is None else {self._input_name: tensor[None]}


def calibration_tensors(detector: Detector, n_sim: int) -> list[np.ndarray[Any, Any]]:
    frames = [f.image for f in sim_frames(CALIBRATION_SEED, n_sim)] + [f.image for f in real_photos()]
    # Mirrored photos too: more real textures at no cost.
    frames += [np.ascontiguousarray(f.image[:, ::-1]) for f in real_photos()]
    return [detector.preprocess(image)[0] for image in frames]


def head_convs(model: onnx.ModelProto, outputs: list[str]) -> list[str]:
    """The Conv nodes that produce the head outputs (through Identity nodes)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    names = []
    for output in outputs:
        node = producers.get(output)
        while node is not None and node.op_type == "Identity":
            node = producers.get(node.input[0])
        if node is not None and node.op_type == "Conv":
            names.append(node.name)
    return names


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quantize(model_path: Path, n_sim: int) -> Path:
    metadata_path = model_path.with_suffix(".json")
    metadata: dict[str, Any] = json.loads(metadata_path.read_text())
    detector = Detector(DetectorConfig(model_path=model_path))
    started = time.perf_counter()
    tensors = calibration_tensors(detector, n_sim)
    out_path = model_path.with_name(f"{model_path.stem}-int8.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        outputs = [o.name for o in model.graph.output]
        exclude = head_convs(model, outputs) if KEEP_FLOAT_OUTPUT_CONVS else []
        quantize_static(
            str(prepared),
            str(out_path),
            FrameReader(detector.spec.input_name, tensors),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=REDUCE_RANGE,
            calibrate_method=CALIBRATION,
            nodes_to_exclude=exclude,
        )
    out_meta = {
        **metadata,
        "name": f"{metadata.get('name', model_path.stem)}-int8",
        "onnx_file": out_path.name,
        "onnx_sha256": sha256(out_path),
        "quantization": {
            "from": model_path.name,
            "from_sha256": metadata.get("onnx_sha256"),
            "tool": "onnxruntime.quantization.quantize_static",
            "format": "QDQ",
            "per_channel": True,
            "activations": "uint8",
            "weights": "int8, 7-bit range" if REDUCE_RANGE else "int8",
            "calibration": CALIBRATION.name,
            "calibration_frames": len(tensors),
            "calibration_set": f"roadside_sim.detection_set.sim_frames(seed={CALIBRATION_SEED}, count={n_sim}) "
            "+ the 7 sample photos, plain and mirrored",
            "float_nodes": exclude,
        },
    }
    out_path.with_suffix(".json").write_text(json.dumps(out_meta, indent=2) + "\n")
    print(
        f"wrote {out_path} ({out_path.stat().st_size / 1e6:.1f} MB, {len(tensors)} calibration frames) "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return out_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the fp32 ONNX model (with its .json)")
    parser.add_argument("--frames", type=int, default=96, help="simulator frames for calibration")
    args = parser.parse_args(argv)
    quantize(args.model, args.frames)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
