"""Parking: the read model other services may read (the EV bay check of the charging service).

Other services read these views, never parking's tables, so that parking may change its tables as long as the views
keep their columns.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from services.common.migration_sql import run_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
-- Each lot's id (whether a lot exists).
CREATE VIEW parking_read_lots AS SELECT id FROM parking_lots;

-- Each spot's state (SpotStatus numbers), since when, and when that reading expires (its lot's occupancy TTL after
-- the lot's last reading); connector_id names the charging connector at the spot, when the lot says so.
CREATE VIEW parking_read_spots AS
SELECT p.lot_id, p.spot_id, p.connector_id, p.status, p.observed_at,
       ls.observed_at + make_interval(secs => l.ttl_s) AS expires_at
FROM parking_spots p
JOIN parking_lots l ON l.id = p.lot_id
JOIN parking_lot_state ls ON ls.lot_id = p.lot_id;
"""

DOWNGRADE = """
DROP VIEW parking_read_spots;
DROP VIEW parking_read_lots;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
