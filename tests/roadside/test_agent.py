"""The camera agent (`v2x camera`): a video file streamed to the service through OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from grpc import aio

from roadside_sim.scene import Scene, drive
from services.common.runtime import RunningService
from services.roadside.agent import AgentConfig, CameraAgent, SourceError, open_source
from tests.conftest import Keys
from tests.roadside.conftest import Stub
from tests.roadside.test_service import configure

SCENE = Scene()


def write_video(path: Path, seconds: float, fps: float) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, SCENE.size)
    assert writer.isOpened()
    cars = [drive(i, 1.5 * i, 12, 66, 40) for i in range(3)]
    for i in range(int(seconds * fps)):
        writer.write(SCENE.render(cars, i / fps))
    writer.release()


async def test_the_agent_streams_a_video_file_and_the_cars_are_counted(
        sim_service: RunningService, sim_stub: Stub, keys: Keys, tmp_path: Path, unique: str) -> None:
    camera_id = f"agent-{unique}"
    await configure(sim_stub, keys, SCENE.camera(camera_id))
    video = tmp_path / "approach.avi"
    write_video(video, 9, 10)
    target = f"127.0.0.1:{sim_service.server.port}"
    agent = CameraAgent(AgentConfig(camera_id=camera_id, source=str(video), target=target, key=keys.admin, fps=5,
                                    fast=True, window=2))

    stats = await agent.run()

    assert stats.sent == 45 and stats.results == 45
    assert not stats.errors and stats.dropped == 0


async def test_the_agent_stops_on_a_refused_key(sim_service: RunningService, sim_stub: Stub, keys: Keys,
                                                tmp_path: Path, unique: str) -> None:
    camera_id = f"agent-{unique}"
    await configure(sim_stub, keys, SCENE.camera(camera_id))
    video = tmp_path / "approach.avi"
    write_video(video, 1, 10)
    target = f"127.0.0.1:{sim_service.server.port}"
    agent = CameraAgent(AgentConfig(camera_id=camera_id, source=str(video), target=target, key=keys.driver,
                                    fast=True))

    with pytest.raises(aio.AioRpcError):
        await agent.run()


def test_a_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open"):
        open_source(str(tmp_path / "nope.mp4"))
