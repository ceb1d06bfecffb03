"""The municipal adapter: per-destination cursors, delivered counts, dead letters, reconciliations.

Revision ID: 0401
Revises: 0001
Create Date: 2026-11-26
"""

from services.common.migration_sql import run_script

revision = "0401"
down_revision = "0001"
branch_labels = ("municipal",)
depends_on = None

UPGRADE = """
-- The adapter drains the outbox in (txid, id) order (rows of finished transactions only) and looks up
-- a lot's neighbouring rows to keep each lot in id order; both need these indexes.
CREATE INDEX IF NOT EXISTS outbox_txid_id ON outbox (txid, id);
CREATE INDEX IF NOT EXISTS outbox_aggregate_id ON outbox (aggregate_id, id);

-- One row per configured destination. Everything at or before (cursor_txid, cursor_id) in
-- (txid, id) order is done (delivered, dead-lettered or not for this destination); `ahead` holds the
-- ids of rows after the cursor that were delivered early to keep a lot's records in order. `origin` is
-- where the cursor started (a destination that starts "now" never had the rows before it).
CREATE TABLE municipal_destinations (
    name              text PRIMARY KEY,
    cursor_txid       xid8 NOT NULL DEFAULT '0',
    cursor_id         bigint NOT NULL DEFAULT 0,
    ahead             bigint[] NOT NULL DEFAULT '{}',
    origin_txid       xid8 NOT NULL DEFAULT '0',
    origin_id         bigint NOT NULL DEFAULT 0,
    paused            boolean NOT NULL DEFAULT false,
    pause_reason      text NOT NULL DEFAULT '',
    replay_from       timestamptz,
    replay_kinds      text[] NOT NULL DEFAULT '{}',
    replay_end_txid   xid8,
    replay_end_id     bigint,
    last_delivered_at timestamptz,
    last_error_code   integer,
    last_error        text,
    last_error_at     timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Records acknowledged by the platform, counted once per record, by kind and local (UTC+8) day of the
-- change: the "ours" side of reconciliation and the per-kind totals of GetStatus.
CREATE TABLE municipal_delivered (
    destination text NOT NULL REFERENCES municipal_destinations (name) ON DELETE CASCADE,
    kind        text NOT NULL,
    day         date NOT NULL,
    delivered   bigint NOT NULL,
    PRIMARY KEY (destination, kind, day)
);

-- Records that could not be delivered: invalid for the profile, or refused by the platform (4xx).
CREATE TABLE municipal_dead_letters (
    id               bigserial PRIMARY KEY,
    destination      text NOT NULL REFERENCES municipal_destinations (name) ON DELETE CASCADE,
    outbox_id        bigint NOT NULL,
    kind             text NOT NULL,
    record_key       text NOT NULL,
    idempotency_key  text NOT NULL,
    state            text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'requeued', 'resolved')),
    attempts         integer NOT NULL DEFAULT 1,
    http_status      integer NOT NULL DEFAULT 0,
    reason           text NOT NULL,
    message          text NOT NULL,
    payload_preview  text NOT NULL DEFAULT '',
    first_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (destination, outbox_id)
);
CREATE INDEX municipal_dead_letters_state ON municipal_dead_letters (destination, state, id DESC);

-- The outcome of each reconciliation (daily job or rpc), latest per destination and day.
CREATE TABLE municipal_reconciliations (
    destination text NOT NULL REFERENCES municipal_destinations (name) ON DELETE CASCADE,
    day         date NOT NULL,
    matched     boolean NOT NULL,
    report      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, day)
)
"""

DOWNGRADE = """
DROP TABLE municipal_reconciliations;
DROP TABLE municipal_dead_letters;
DROP TABLE municipal_delivered;
DROP TABLE municipal_destinations;
DROP INDEX IF EXISTS outbox_aggregate_id;
DROP INDEX IF EXISTS outbox_txid_id
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
