"""The `v2x camera` arguments, apart from the agent so that building the CLI parser imports no OpenCV."""

from __future__ import annotations

import argparse
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--camera-id", required=True, help="the configured camera id")
    p.add_argument("--source", required=True, help="rtsp://..., a video file, /dev/video0 or a device number")
    p.add_argument("--target", default=os.environ.get("V2X_ROADSIDE_TARGET", "127.0.0.1:50051"),
                   help="roadside service host:port (V2X_ROADSIDE_TARGET)")
    p.add_argument("--key", default=os.environ.get("V2X_CAMERA_KEY", ""),
                   help="the camera's API key (V2X_CAMERA_KEY)")
    p.add_argument("--fps", type=float, default=5.0, help="frames per second to send (default 5)")
    p.add_argument("--max-side", type=int, default=1280, help="shrink frames to at most this many pixels a side")
    p.add_argument("--jpeg-quality", type=int, default=80)
    p.add_argument("--window", type=int, default=4, help="frames in flight at most")
    p.add_argument("--fast", action="store_true", help="files: send as fast as the service answers")
    p.add_argument("--loop", action="store_true", help="files: start again at the end")
    p.add_argument("--tls-ca", default="", help="CA certificate of the service (TLS)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames")
