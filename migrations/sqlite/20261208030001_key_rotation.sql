-- Key rotation (see the Postgres migration of the same name).
CREATE TABLE replica_heartbeats (
    replica     TEXT PRIMARY KEY,
    addr        TEXT NOT NULL,
    current_key TEXT NOT NULL,
    next_key    TEXT,
    wraps_with  TEXT NOT NULL,
    seen_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE tenant_key_rewraps (
    tenant_id   BLOB PRIMARY KEY REFERENCES tenants (id),
    kek_version INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
) STRICT;

CREATE INDEX credential_versions_kek ON credential_versions (tenant_id, kek_version);
