CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id                          TEXT PRIMARY KEY,
    organization_id             TEXT NOT NULL,
    url                         TEXT NOT NULL,
    description                 TEXT NOT NULL,
    event_types                 TEXT,
    disabled                    BIGINT NOT NULL DEFAULT 0,
    disabled_reason             TEXT,
    disabled_at                 BIGINT,
    failing_since               BIGINT,
    secret_sealed               TEXT NOT NULL,
    previous_secret_sealed      TEXT,
    previous_secret_expires_at  BIGINT,
    signing_key_sealed          TEXT NOT NULL,
    signing_public_key          TEXT NOT NULL,
    created_at                  BIGINT NOT NULL,
    updated_at                  BIGINT NOT NULL,
    deleted_at                  BIGINT,
    created_by                  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_org_created ON webhook_endpoints (organization_id, created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS webhook_events (
    organization_id TEXT NOT NULL,
    id              TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (organization_id, id)
);
CREATE INDEX IF NOT EXISTS webhook_events_org_created ON webhook_events (organization_id, created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    endpoint_id     TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_owner     TEXT,
    lease_until     BIGINT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    UNIQUE (organization_id, event_id, endpoint_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, status);

CREATE TABLE IF NOT EXISTS webhook_attempts (
    id              TEXT PRIMARY KEY,
    delivery_id     TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    endpoint_id     TEXT NOT NULL,
    attempt_number  BIGINT NOT NULL,
    trigger_kind    TEXT NOT NULL,
    attempted_at    BIGINT NOT NULL,
    duration_ms     BIGINT NOT NULL,
    result          TEXT NOT NULL,
    http_status     BIGINT,
    error_class     TEXT,
    response_body   TEXT,
    worker          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_attempts_event ON webhook_attempts (organization_id, event_id, attempted_at, id);

CREATE TABLE IF NOT EXISTS worker_heartbeats (
    worker_id   TEXT PRIMARY KEY,
    beat_at     BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS audit_outbox (
    seq             BIGSERIAL PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    organization_id TEXT NOT NULL,
    occurred_at     BIGINT NOT NULL,
    actor           TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    message         TEXT,
    resource_type   TEXT NOT NULL,
    resource_id     TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0
);
