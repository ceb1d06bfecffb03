"""IDPS: incidents, the reports (sources) they are made of, evidence, source links and the audit trail.

Revision ID: 0201
Revises: 0001
Create Date: 2026-11-25
"""

from services.common.migration_sql import run_script

revision = "0201"
down_revision = "0001"
branch_labels = ("idps",)
depends_on = None

UPGRADE = """
CREATE TABLE idps_incidents (
    id                text PRIMARY KEY,
    type              integer NOT NULL,
    type_fixed        boolean NOT NULL DEFAULT false,
    status            smallint NOT NULL,
    severity          smallint NOT NULL,
    severity_derived  boolean NOT NULL DEFAULT true,
    lane_impacts      jsonb NOT NULL DEFAULT '[]',
    lat               double precision NOT NULL,
    lon               double precision NOT NULL,
    position          geography(Point, 4326) NOT NULL,
    radius_m          double precision NOT NULL DEFAULT 0,
    heading_deg       double precision,
    confidence        real NOT NULL,
    source_conf       jsonb NOT NULL DEFAULT '{}',
    weight_sum        double precision NOT NULL,
    source_count      integer NOT NULL,
    source_kinds      smallint[] NOT NULL,
    plates            text[] NOT NULL DEFAULT '{}',
    version           bigint NOT NULL DEFAULT 1,
    first_observed_at timestamptz NOT NULL,
    last_observed_at  timestamptz NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    cleared_at        timestamptz,
    closed_at         timestamptz,
    merged_into_id    text REFERENCES idps_incidents (id),
    description       text NOT NULL DEFAULT ''
);

-- Correlation looks for open (or recently cleared) incidents near a point.
CREATE INDEX idps_incidents_open_position ON idps_incidents USING gist (position) WHERE status BETWEEN 1 AND 5;
CREATE INDEX idps_incidents_position ON idps_incidents USING gist (position);
CREATE INDEX idps_incidents_created ON idps_incidents (created_at DESC, id DESC);
CREATE INDEX idps_incidents_cleared ON idps_incidents (cleared_at) WHERE status = 5;

-- One row per report; incident_id is where the report belongs now (links keep where it was).
CREATE TABLE idps_reports (
    id              text PRIMARY KEY,
    incident_id     text NOT NULL REFERENCES idps_incidents (id),
    source_kind     smallint NOT NULL,
    source_id       text NOT NULL,
    idempotency_key text NOT NULL,
    actor           text NOT NULL,
    type            integer NOT NULL,
    external_code   text NOT NULL DEFAULT '',
    lat             double precision NOT NULL,
    lon             double precision NOT NULL,
    radius_m        double precision NOT NULL DEFAULT 0,
    confidence      real NOT NULL,
    observed_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    lane_id         text NOT NULL DEFAULT '',
    heading_deg     double precision,
    plate           text NOT NULL DEFAULT '',
    plate_colour    smallint NOT NULL DEFAULT 0,
    has_snapshot    boolean NOT NULL DEFAULT false,
    description     text NOT NULL DEFAULT '',
    UNIQUE (source_kind, source_id, idempotency_key)
);
CREATE INDEX idps_reports_incident ON idps_reports (incident_id, observed_at);

-- Snapshots apart from the reports, so that listing sources never reads images.
CREATE TABLE idps_evidence (
    report_id     text PRIMARY KEY REFERENCES idps_reports (id),
    snapshot_jpeg bytea NOT NULL
);

CREATE TABLE idps_links (
    id               bigserial PRIMARY KEY,
    report_id        text NOT NULL REFERENCES idps_reports (id),
    kind             smallint NOT NULL,
    from_incident_id text REFERENCES idps_incidents (id),
    to_incident_id   text NOT NULL REFERENCES idps_incidents (id),
    at               timestamptz NOT NULL,
    actor            text NOT NULL
);
CREATE INDEX idps_links_to ON idps_links (to_incident_id, id);
CREATE INDEX idps_links_from ON idps_links (from_incident_id, id) WHERE from_incident_id IS NOT NULL;

CREATE TABLE idps_audit (
    id                  bigserial PRIMARY KEY,
    incident_id         text NOT NULL REFERENCES idps_incidents (id),
    version             bigint NOT NULL,
    at                  timestamptz NOT NULL,
    actor               text NOT NULL,
    action              smallint NOT NULL,
    note                text NOT NULL DEFAULT '',
    from_status         smallint NOT NULL DEFAULT 0,
    to_status           smallint NOT NULL DEFAULT 0,
    details             text NOT NULL DEFAULT '',
    report_id           text NOT NULL DEFAULT '',
    related_incident_id text NOT NULL DEFAULT ''
);
CREATE INDEX idps_audit_incident ON idps_audit (incident_id, id);
"""

DOWNGRADE = """
DROP TABLE idps_audit;
DROP TABLE idps_links;
DROP TABLE idps_evidence;
DROP TABLE idps_reports;
DROP TABLE idps_incidents;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
