-- Signed checkpoints and the platform-level audit chain (see the Postgres
-- migration of the same name): the platform chain of events that belong to
-- no tenant (failed authentication), hash-chained like a tenant's chain.

CREATE TABLE platform_audit_heads (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    sequence INTEGER NOT NULL,
    hash     BLOB NOT NULL
) STRICT;

INSERT INTO platform_audit_heads (id, sequence, hash) VALUES (1, 0, zeroblob(32));

CREATE TABLE platform_audit_events (
    tenant_id       BLOB NOT NULL,
    sequence        INTEGER NOT NULL PRIMARY KEY,
    id              BLOB NOT NULL,
    at              INTEGER NOT NULL,
    principal_id    BLOB,
    actor           TEXT NOT NULL,
    on_behalf_of    TEXT,
    action          TEXT NOT NULL,
    credential_id   BLOB,
    credential_name TEXT,
    version         INTEGER,
    environment     TEXT,
    purpose         TEXT,
    outcome         TEXT NOT NULL,
    reason_code     TEXT NOT NULL,
    peer            TEXT,
    request_id      TEXT,
    trace_id        TEXT,
    detail          TEXT,
    prev_hash       BLOB NOT NULL,
    hash            BLOB NOT NULL
) STRICT;

CREATE INDEX platform_audit_events_at ON platform_audit_events (at);
