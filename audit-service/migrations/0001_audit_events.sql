CREATE TABLE IF NOT EXISTS audit_events (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    occurred_at     BIGINT NOT NULL,
    actor           TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    message         TEXT,
    resource_type   TEXT NOT NULL,
    resource_id     TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    received_at     BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_org_time ON audit_events (organization_id, occurred_at DESC, id DESC);
