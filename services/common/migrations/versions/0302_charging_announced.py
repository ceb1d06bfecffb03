"""Whether a charging station's static record (`charger_static`) has been written to the outbox.

Stations registered before the record existed have none, and the municipal platform would never get their
static table: the service writes theirs when it starts (`ChargingStore.announce_pending`). The default false
marks every existing station as owed; a station written since is marked in the transaction of its record.

Revision ID: 0302
Revises: 0301
Create Date: 2026-12-06
"""

from services.common.migration_sql import run_script

revision = "0302"
down_revision = "0301"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE charging_stations ADD COLUMN announced boolean NOT NULL DEFAULT false;
CREATE INDEX charging_stations_unannounced ON charging_stations (id) WHERE NOT announced
"""

DOWNGRADE = """
DROP INDEX charging_stations_unannounced;
ALTER TABLE charging_stations DROP COLUMN announced
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
