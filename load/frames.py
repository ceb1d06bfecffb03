"""Camera frames for the load test, rendered in advance by the roadside simulator (`roadside_sim`): SUMO traffic on
the district's intersections at the chosen hour, each camera's JPEG frames at its frame rate, and each camera's
configuration (the `Camera` message ConfigureCamera takes), written into one zip file that the locust Camera users
read. Rendering costs 7..10 ms a frame and SUMO a few seconds to start, which is why it happens before locust
starts (and in a process of its own: the locust process imports neither SUMO nor the renderer).

    .venv/bin/python -m load.frames --out load/.cache/frames-photo-5fps.zip --fps 5 --seconds 20 [--render key]

Layout of the file: `cameras/<n>.pb` (a serialized v2x.roadside.v1.Camera, the template; users replace its id),
`frames/<n>/<i>.jpg` (frame i of camera n, in order), `meta.json` (fps, frames per camera, style, hour).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import zipfile
from datetime import datetime
from pathlib import Path

from roadside_sim.cameras import FAR_M, NEAR_M, rigs
from roadside_sim.network import District
from roadside_sim.render import Renderer, brightness_at, encode_jpeg
from roadside_sim.traffic import Traffic

WARM_UP_S = 240.0  # traffic fills the district's approaches before the first frame (as `v2x sim` does)


def render_cache(
    out: Path,
    *,
    intersections: int = 4,
    cameras_per: int = 1,
    fps: float = 5.0,
    seconds: float = 20.0,
    hour: float = 8.0,
    style: str = "photo",
    seed: int = 13,
) -> dict[str, object]:
    """Renders `seconds` of every camera at `fps` into the zip file `out`; returns its meta data."""
    district = District()
    cams = rigs(district, intersections, cameras_per)
    begin = hour * 3600
    with tempfile.TemporaryDirectory(prefix="load-frames-") as work:
        traffic = Traffic(district, Path(work) / "sumo", begin - WARM_UP_S, begin + seconds + 60, seed=seed)
        for rig in cams:
            traffic.add_e2(rig.approach, NEAR_M, FAR_M)
        traffic.start()
        try:
            traffic.step_to(begin)
            renderers = [Renderer(rig, seed=seed, style=style) for rig in cams]
            n_frames = max(1, round(seconds * fps))
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
                for n, rig in enumerate(cams):
                    z.writestr(f"cameras/{n}.pb", rig.camera().SerializeToString())
                light = brightness_at(hour)
                for i in range(n_frames):
                    traffic.step_to(begin + i / fps)
                    vehicles = traffic.vehicles()
                    for n, renderer in enumerate(renderers):
                        img, _ = renderer.render(vehicles, brightness=light)
                        z.writestr(f"frames/{n}/{i:05d}.jpg", encode_jpeg(img))
                meta: dict[str, object] = {
                    "fps": fps,
                    "frames": n_frames,
                    "cameras": len(cams),
                    "style": style,
                    "hour": hour,
                    "seed": seed,
                    "camera_ids": [r.camera_id for r in cams],
                    "rendered_at": datetime.now().isoformat(timespec="seconds"),
                }
                z.writestr("meta.json", json.dumps(meta))
            tmp.replace(out)
        finally:
            traffic.close()
    return meta


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--intersections", type=int, default=4, help="junctions of the district (1..4)")
    p.add_argument("--cameras-per", type=int, default=1, help="cameras per junction (1..4)")
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=20.0, help="length of each camera's clip (it loops)")
    p.add_argument("--hour", type=float, default=8.0, help="local hour of the simulated traffic")
    p.add_argument(
        "--render",
        choices=("photo", "key"),
        default="photo",
        help="photo: for the real detector; key: key-coloured for V2X_ROADSIDE_DETECTOR=sim",
    )
    p.add_argument("--seed", type=int, default=13)
    ns = p.parse_args(argv)
    started = time.monotonic()
    meta = render_cache(
        ns.out,
        intersections=ns.intersections,
        cameras_per=ns.cameras_per,
        fps=ns.fps,
        seconds=ns.seconds,
        hour=ns.hour,
        style=ns.render,
        seed=ns.seed,
    )
    print(
        f"load.frames: {meta['cameras']} cameras x {meta['frames']} frames ({ns.render}) in "
        f"{time.monotonic() - started:.1f} s -> {ns.out}",
        flush=True,
    )


if __name__ == "__main__":
    main()
