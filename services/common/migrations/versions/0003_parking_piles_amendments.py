"""Parking: fast/slow charging piles per lot; corrections and voids of recorded passages.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from services.common.migration_sql import run_script

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
-- Lots registered before this read 0 piles until their static data is next updated.
ALTER TABLE parking_lots
    ADD COLUMN fast_charging_piles integer NOT NULL DEFAULT 0 CHECK (fast_charging_piles >= 0),
    ADD COLUMN slow_charging_piles integer NOT NULL DEFAULT 0 CHECK (slow_charging_piles >= 0),
    -- Each pile serves at least one EV space.
    ADD CONSTRAINT parking_lots_piles_within_ev CHECK (fast_charging_piles + slow_charging_piles <= cap_ev);

-- state: 1 recorded, 2 corrected, 3 voided (PassageState); revision counts the amendments.
ALTER TABLE parking_passages
    ADD COLUMN state        smallint NOT NULL DEFAULT 1 CHECK (state IN (1, 2, 3)),
    ADD COLUMN revision     integer NOT NULL DEFAULT 0,
    ADD COLUMN amended_at   timestamptz,
    ADD COLUMN amend_reason text NOT NULL DEFAULT '';

-- Every amendment as it was made: who, why, and the passage's values before and after.
CREATE TABLE parking_passage_amendments (
    id          bigserial PRIMARY KEY,
    passage_row bigint NOT NULL REFERENCES parking_passages (id) ON DELETE CASCADE,
    revision    integer NOT NULL,
    action      smallint NOT NULL,
    reason      text NOT NULL,
    amended_by  text NOT NULL,
    before      jsonb NOT NULL,
    after       jsonb NOT NULL,
    amended_at  timestamptz NOT NULL,
    UNIQUE (passage_row, revision)
);
"""

DOWNGRADE = """
DROP TABLE parking_passage_amendments;
ALTER TABLE parking_passages DROP COLUMN amend_reason, DROP COLUMN amended_at, DROP COLUMN revision,
    DROP COLUMN state;
ALTER TABLE parking_lots DROP CONSTRAINT parking_lots_piles_within_ev, DROP COLUMN slow_charging_piles,
    DROP COLUMN fast_charging_piles;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
