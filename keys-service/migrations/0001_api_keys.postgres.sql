CREATE TABLE IF NOT EXISTS api_keys (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    name            TEXT NOT NULL,
    prefix          TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    scopes          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    revoked_at      BIGINT,
    last_used_at    BIGINT,
    created_by      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_org_created ON api_keys (organization_id, created_at DESC, id DESC);

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
