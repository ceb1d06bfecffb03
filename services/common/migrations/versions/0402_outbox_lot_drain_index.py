"""The municipal adapter's per-lot order check probes a lot's rows in drain order: (aggregate_id, txid, id).

Revision ID: 0402
Revises: 0401
Create Date: 2026-11-24
"""

from services.common.migration_sql import run_script

revision = "0402"
down_revision = "0401"
branch_labels = None
depends_on = None

# With each lot's rows in (txid, id) order, the rows of a lot that lie beyond a chunk are one range of the index,
# with the id bound checked in the index itself: one probe per lot of the chunk where (aggregate_id, id) needed two
# (the lot's last row before the chunk, then the rows between it and the chunk's). It replaces that index, so the
# writers of the outbox keep one index per row for it.
UPGRADE = """
CREATE INDEX IF NOT EXISTS outbox_aggregate_txid_id ON outbox (aggregate_id, txid, id);
DROP INDEX IF EXISTS outbox_aggregate_id;
"""

DOWNGRADE = """
CREATE INDEX IF NOT EXISTS outbox_aggregate_id ON outbox (aggregate_id, id);
DROP INDEX IF EXISTS outbox_aggregate_txid_id;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
