"""The int8 detector (models/quantize_detector.py) against the fp32 one it was made from: the same vehicles on the
real photos and on held-out simulator frames, and the service picks it by its setting."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from roadside_sim.detection_set import EVALUATION_SEED, LabelledFrame, Score, real_photos, sim_frames
from services.roadside.app import _default_detector
from services.roadside.detector import (
    BgrImage,
    Detector,
    DetectorConfig,
    DetectorError,
    model_for_precision,
    resolve_precision,
)

DOG_PICKUP = (465.0, 72.0, 690.0, 172.0)


@pytest.fixture(scope="session")
def int8_detector(int8_path: Path) -> Detector:
    return Detector(DetectorConfig(model_path=int8_path))


def recall(detector: Detector, frames: list[LabelledFrame]) -> Score:
    score = Score()
    for frame in frames:
        found = detector.detect(frame.image)
        score.add(frame.truth, [((d.x1, d.y1, d.x2, d.y2), d.vehicle_class.value) for d in found])
    return score


def test_the_int8_model_is_qdq_per_channel_and_says_how_it_was_made(int8_path: Path, model_path: Path) -> None:
    model = onnx.load(str(int8_path))
    ops = {n.op_type for n in model.graph.node}
    meta = json.loads(int8_path.with_suffix(".json").read_text())

    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weight_scales = [i for i in model.graph.initializer if i.name.endswith("_scale") and len(i.dims) == 1]
    assert any(i.dims[0] > 1 for i in weight_scales)  # a scale per output channel
    assert meta["quantization"]["format"] == "QDQ" and meta["quantization"]["per_channel"]
    assert meta["quantization"]["from_sha256"] == json.loads(model_path.with_suffix(".json").read_text())[
        "onnx_sha256"
    ]


@pytest.mark.slow  # both detectors over the sample photos: ~23 s
def test_int8_finds_the_same_vehicles_as_fp32(detector: Detector, int8_detector: Detector) -> None:
    frames = real_photos() + sim_frames(EVALUATION_SEED, 40)

    fp32, int8 = recall(detector, frames), recall(int8_detector, frames)

    assert fp32.truths == int8.truths > 50
    assert fp32.recall > 0.6
    assert int8.recall >= fp32.recall - 0.02, (fp32, int8)
    assert int8.unmatched <= fp32.unmatched + 3


def test_int8_keeps_the_pickup_as_one_vehicle(int8_detector: Detector, load_sample: Callable[[str], BgrImage]) -> None:
    vehicles = [d for d in int8_detector.detect(load_sample("dog.jpg")) if d.vehicle_class.value in ("car", "truck")]

    assert len(vehicles) == 1
    d = vehicles[0]
    ix = max(0.0, min(d.x2, DOG_PICKUP[2]) - max(d.x1, DOG_PICKUP[0]))
    iy = max(0.0, min(d.y2, DOG_PICKUP[3]) - max(d.y1, DOG_PICKUP[1]))
    union = d.width * d.height + (DOG_PICKUP[2] - DOG_PICKUP[0]) * (DOG_PICKUP[3] - DOG_PICKUP[1]) - ix * iy
    assert ix * iy / union >= 0.7


@pytest.mark.slow
def test_the_service_loads_the_model_of_its_precision(int8_path: Path, model_path: Path) -> None:
    int8 = _default_detector("onnx", 1, "int8")
    fp32 = _default_detector("onnx", 1, "fp32")

    assert isinstance(int8, Detector) and int8.config.model_path == int8_path
    assert isinstance(fp32, Detector) and fp32.config.model_path == model_path
    with pytest.raises(DetectorError, match="fp32 or int8"):
        model_for_precision(model_path, "fp16")


AVX2_ONLY = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n"
AVX512_VNNI = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni\n"
ARM_DOTPROD = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\n"


def _models(folder: Path, *stems: str) -> Path:
    """Empty model files (and their .json) in a folder; the first stem's .onnx."""
    for stem in stems:
        (folder / f"{stem}.onnx").write_bytes(b"")
        (folder / f"{stem}.json").write_text("{}")
    return folder / f"{stems[0]}.onnx"


def test_auto_takes_int8_only_where_the_cpu_has_an_8_bit_dot_product(tmp_path: Path) -> None:
    model = _models(tmp_path, "detector", "detector-int8")

    assert resolve_precision("auto", model, AVX512_VNNI)[0] == "int8"
    assert resolve_precision("auto", model, ARM_DOTPROD)[0] == "int8"
    assert resolve_precision("auto", model, AVX2_ONLY)[0] == "fp32"
    assert resolve_precision("auto", model, "")[0] == "fp32"  # /proc/cpuinfo unreadable: the model itself
    assert resolve_precision("int8", model, AVX2_ONLY)[0] == "int8"  # a chosen precision stands
    assert resolve_precision("fp32", model, AVX512_VNNI)[0] == "fp32"


def test_auto_keeps_fp32_for_a_model_without_an_int8_version_even_on_a_vnni_cpu(tmp_path: Path) -> None:
    # NanoDet-g has no int8 version: on a VNNI CPU "auto" chose nanodet-g-int8.onnx and the service could not start.
    model = _models(tmp_path, "nanodet-g")

    precision, why = resolve_precision("auto", model, AVX512_VNNI)

    assert precision == "fp32"
    assert "nanodet-g-int8.onnx" in why and "avx512_vnni" in why


def test_auto_keeps_fp32_when_the_int8_model_has_no_metadata(tmp_path: Path) -> None:
    model = _models(tmp_path, "detector")
    (tmp_path / "detector-int8.onnx").write_bytes(b"")

    precision, why = resolve_precision("auto", model, ARM_DOTPROD)

    assert precision == "fp32" and "detector-int8.json" in why


def test_auto_says_why_it_keeps_fp32_on_a_cpu_without_a_dot_product(tmp_path: Path) -> None:
    model = _models(tmp_path, "detector", "detector-int8")

    assert "no 8-bit dot product" in resolve_precision("auto", model, AVX2_ONLY)[1]


@pytest.mark.slow
def test_the_service_on_auto_loads_the_model_this_cpu_runs_best(int8_path: Path, model_path: Path) -> None:
    detector = _default_detector("onnx", 1, "auto")

    expected = int8_path if resolve_precision("auto", model_path)[0] == "int8" else model_path
    assert isinstance(detector, Detector) and detector.config.model_path == expected
