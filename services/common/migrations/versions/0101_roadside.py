"""Roadside: the camera registry and per-minute traffic counts.

Revision ID: 0101
Revises: 0001
Create Date: 2026-11-24
"""

from services.common.migration_sql import run_script

revision = "0101"
down_revision = "0001"
branch_labels = ("roadside",)
depends_on = None

UPGRADE = """
-- One row per camera. `config` is the whole v2x.roadside.v1.Camera message as proto JSON (lanes,
-- zones, counting lines, homography, thresholds); the columns beside it are what is queried.
CREATE TABLE roadside_cameras (
    id          text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    location    geography(Point, 4326) NOT NULL,
    config      jsonb NOT NULL,
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX roadside_cameras_location ON roadside_cameras USING gist (location);

-- Per camera and minute (camera clock): frames inferred, per-lane and per-line counts as JSON
-- ({"lane_id": {...}}); rewritten while the minute is open, final once it is past.
CREATE TABLE roadside_counts (
    camera_id    text NOT NULL REFERENCES roadside_cameras (id) ON DELETE CASCADE,
    minute_start timestamptz NOT NULL,
    frames       integer NOT NULL,
    lanes        jsonb NOT NULL,
    lines        jsonb NOT NULL,
    PRIMARY KEY (camera_id, minute_start)
)
"""

DOWNGRADE = """
DROP TABLE roadside_counts;
DROP TABLE roadside_cameras
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
