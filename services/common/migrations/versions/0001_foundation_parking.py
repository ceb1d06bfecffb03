"""Foundation (api keys, outbox) and the parking service.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from services.common.migration_sql import run_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    secret_hash bytea NOT NULL,
    role        text NOT NULL,
    scope       text,
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Every change the city must see, written in the transaction of the change itself.
-- txid lets the adapter drain without skipping rows of transactions that commit out of id order.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    txid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    kind         text NOT NULL,
    aggregate_id text NOT NULL,
    payload      jsonb NOT NULL
);
CREATE INDEX outbox_created_at ON outbox (created_at);

CREATE TABLE parking_lots (
    id               text PRIMARY KEY,
    operator_id      text NOT NULL,
    name             text NOT NULL,
    address          text NOT NULL DEFAULT '',
    region_code      text NOT NULL DEFAULT '',
    kind             smallint NOT NULL,
    location         geography(Point, 4326) NOT NULL,
    line             geography(LineString, 4326),
    cap_general      integer NOT NULL CHECK (cap_general >= 0),
    cap_ev           integer NOT NULL CHECK (cap_ev >= 0),
    cap_disabled     integer NOT NULL CHECK (cap_disabled >= 0),
    cap_reserved     integer NOT NULL CHECK (cap_reserved >= 0),
    price            jsonb NOT NULL,
    hourly_price_fen integer NOT NULL,
    opening          jsonb NOT NULL,
    always_open      boolean NOT NULL,
    open_minutes     int4multirange NOT NULL,
    entrances        jsonb NOT NULL,
    detection_type   smallint NOT NULL,
    ttl_s            integer NOT NULL,
    phone            text NOT NULL DEFAULT '',
    version          bigint NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parking_lots_location ON parking_lots USING gist (location);
CREATE INDEX parking_lots_operator ON parking_lots (operator_id, id);

-- The live state, one row per lot; kept apart from the static row so that frequent updates stay
-- small and HOT (no indexed column changes).
CREATE TABLE parking_lot_state (
    lot_id           text PRIMARY KEY REFERENCES parking_lots (id) ON DELETE CASCADE,
    seq              bigint NOT NULL DEFAULT 0,
    observed_at      timestamptz,
    received_at      timestamptz,
    free_general     integer,
    free_ev          integer,
    free_disabled    integer,
    free_reserved    integer,
    closed           boolean NOT NULL DEFAULT false,
    full_at_entrance boolean NOT NULL DEFAULT false,
    trend            smallint NOT NULL DEFAULT 4,
    samples          jsonb NOT NULL DEFAULT '[]'
) WITH (fillfactor = 70);

CREATE TABLE parking_spots (
    lot_id       text NOT NULL REFERENCES parking_lots (id) ON DELETE CASCADE,
    spot_id      text NOT NULL,
    space_class  smallint NOT NULL,
    status       smallint NOT NULL DEFAULT 4,
    observed_at  timestamptz,
    connector_id text NOT NULL DEFAULT '',
    location     geography(Point, 4326),
    PRIMARY KEY (lot_id, spot_id)
) WITH (fillfactor = 80);

CREATE TABLE parking_passages (
    id           bigserial PRIMARY KEY,
    lot_id       text NOT NULL REFERENCES parking_lots (id) ON DELETE CASCADE,
    passage_id   text NOT NULL,
    direction    smallint NOT NULL,
    plate        text NOT NULL,
    plate_colour smallint NOT NULL,
    lane         text NOT NULL DEFAULT '',
    space_class  smallint NOT NULL,
    passed_at    timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (lot_id, passage_id)
);
CREATE INDEX parking_passages_lot_time ON parking_passages (lot_id, passed_at DESC, id DESC);
"""

DOWNGRADE = """
DROP TABLE parking_passages;
DROP TABLE parking_spots;
DROP TABLE parking_lot_state;
DROP TABLE parking_lots;
DROP TABLE outbox;
DROP TABLE api_keys;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
