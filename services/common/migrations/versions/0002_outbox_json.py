"""The outbox payload as json (its text kept as written) rather than jsonb.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from services.common.migration_sql import run_script

revision = "0002"
down_revision = "0001"
branch_labels = ("foundation",)
depends_on = None

# A payload is written once and read once, whole, by the municipal adapter; nothing queries inside it on a hot path.
# jsonb parses it into its binary form on the way in (~4 us a row here) and prints it back to text on the way out
# (~2 us): json only checks that it is valid JSON and hands the text back as it is.
UPGRADE = """
ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json
"""

DOWNGRADE = """
ALTER TABLE outbox ALTER COLUMN payload TYPE jsonb USING payload::jsonb
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
