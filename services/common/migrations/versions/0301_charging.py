"""The charging service: stations, connectors and their live state, OCPP charge points and sessions,
EV bay flags.

Revision ID: 0301
Revises: 0001
Create Date: 2026-11-25
"""

from services.common.migration_sql import run_script

revision = "0301"
down_revision = "0001"
branch_labels = ("charging",)
depends_on = None

UPGRADE = """
CREATE TABLE charging_stations (
    id             text PRIMARY KEY,
    operator_id    text NOT NULL,
    name           text NOT NULL,
    address        text NOT NULL DEFAULT '',
    location       geography(Point, 4326) NOT NULL,
    parking_lot_id text NOT NULL DEFAULT '',
    status_ttl_s   integer NOT NULL CHECK (status_ttl_s BETWEEN 10 AND 86400),
    -- A summary of the connectors, so a search can skip stations without reading them: a bit per
    -- ConnectorStandard (1 << standard) and the most powerful connector.
    plug_mask      integer NOT NULL DEFAULT 0,
    max_power_kw   double precision NOT NULL DEFAULT 0,
    version        bigint NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX charging_stations_location ON charging_stations USING gist (location);
CREATE INDEX charging_stations_operator ON charging_stations (operator_id, id);
CREATE INDEX charging_stations_lot ON charging_stations (parking_lot_id, id) WHERE parking_lot_id <> '';

-- One row per connector; its EVSE's fields are repeated on each of the EVSE's connectors (an EVSE
-- has no data of its own beyond them, and never exists without a connector).
CREATE TABLE charging_connectors (
    id                      text PRIMARY KEY,
    station_id              text NOT NULL REFERENCES charging_stations (id) ON DELETE CASCADE,
    evse_id                 text NOT NULL,
    evse_position           integer NOT NULL,
    position                integer NOT NULL,
    charge_point_id         text NOT NULL DEFAULT '',
    ocpp_evse_id            integer NOT NULL DEFAULT 0,
    ocpp_connector_id       integer NOT NULL DEFAULT 0,
    standard                smallint NOT NULL,
    max_power_kw            double precision NOT NULL CHECK (max_power_kw > 0),
    price_per_kwh_fen       integer NOT NULL CHECK (price_per_kwh_fen >= 0),
    service_fee_per_kwh_fen integer NOT NULL CHECK (service_fee_per_kwh_fen >= 0),
    parking_spot_id         text NOT NULL DEFAULT ''
);
CREATE INDEX charging_connectors_station ON charging_connectors (station_id, evse_position, position)
    INCLUDE (id, standard, max_power_kw);
CREATE UNIQUE INDEX charging_connectors_ocpp ON charging_connectors (charge_point_id, ocpp_evse_id, ocpp_connector_id)
    WHERE charge_point_id <> '';

-- The live state, one row per connector, apart from the static row so that updates stay small and HOT.
-- source: 0 none, 1 operator, 2 OCPP 1.6J, 3 OCPP 2.0.1 (StatusSource). ttl_s: how long an operator's
-- reading lives after observed_at; OCPP readings live while the charge point is heard from.
CREATE TABLE charging_connector_state (
    connector_id     text PRIMARY KEY REFERENCES charging_connectors (id) ON DELETE CASCADE,
    status           smallint NOT NULL DEFAULT 12,
    error_code       smallint NOT NULL DEFAULT 1,
    info             text NOT NULL DEFAULT '',
    source           smallint NOT NULL DEFAULT 0,
    observed_at      timestamptz,
    received_at      timestamptz,
    status_since     timestamptz,
    ttl_s            integer NOT NULL DEFAULT 0,
    expiry_announced boolean NOT NULL DEFAULT false
) WITH (fillfactor = 70);

-- OCPP charge points. password_hash: pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>.
CREATE TABLE charging_charge_points (
    id            text PRIMARY KEY,
    station_id    text NOT NULL REFERENCES charging_stations (id) ON DELETE CASCADE,
    protocol      smallint NOT NULL,
    password_hash text NOT NULL,
    heartbeat_s   integer NOT NULL,
    connected     boolean NOT NULL DEFAULT false,
    last_seen_at  timestamptz,
    booted_at     timestamptz,
    vendor        text NOT NULL DEFAULT '',
    model         text NOT NULL DEFAULT '',
    firmware      text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);
CREATE INDEX charging_charge_points_station ON charging_charge_points (station_id);

-- Charging sessions reported over OCPP. id is the OCPP 1.6 transactionId; transaction_id is the
-- OCPP 2.0.1 one. The id token is kept as a SHA-256 digest only (no authorisation list here).
CREATE TABLE charging_sessions (
    id              bigserial PRIMARY KEY,
    charge_point_id text NOT NULL,
    connector_id    text NOT NULL,
    transaction_id  text,
    id_token_sha256 text NOT NULL DEFAULT '',
    started_at      timestamptz NOT NULL,
    stopped_at      timestamptz,
    meter_start_wh  double precision,
    meter_stop_wh   double precision,
    last_energy_wh  double precision,
    last_power_w    double precision,
    last_soc_pct    double precision,
    last_meter_at   timestamptz,
    charging_state  text NOT NULL DEFAULT '',
    stop_reason     text NOT NULL DEFAULT '',
    UNIQUE (charge_point_id, transaction_id),
    UNIQUE (charge_point_id, connector_id, started_at)
);
CREATE INDEX charging_sessions_connector ON charging_sessions (connector_id, started_at DESC);

-- Failed EV bay checks; at most one open flag per bay and kind.
CREATE TABLE charging_bay_flags (
    id               bigserial PRIMARY KEY,
    kind             smallint NOT NULL,
    operator_id      text NOT NULL,
    station_id       text NOT NULL,
    connector_id     text NOT NULL,
    parking_lot_id   text NOT NULL,
    parking_spot_id  text NOT NULL,
    connector_status smallint NOT NULL,
    since            timestamptz NOT NULL,
    raised_at        timestamptz NOT NULL,
    last_seen_at     timestamptz NOT NULL,
    cleared_at       timestamptz
);
CREATE UNIQUE INDEX charging_bay_flags_open ON charging_bay_flags (parking_lot_id, parking_spot_id, kind)
    WHERE cleared_at IS NULL;
CREATE INDEX charging_bay_flags_station ON charging_bay_flags (station_id, id DESC);
CREATE INDEX charging_bay_flags_operator ON charging_bay_flags (operator_id, id DESC);
"""

DOWNGRADE = """
DROP TABLE charging_bay_flags;
DROP TABLE charging_sessions;
DROP TABLE charging_charge_points;
DROP TABLE charging_connector_state;
DROP TABLE charging_connectors;
DROP TABLE charging_stations;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
