-- strongroom schema, SQLite: the same tables as Postgres, without roles or
-- row-level security (a single-node store has one tenant boundary: the
-- tenant filter every query carries). UUIDs are 16-byte BLOBs, times are
-- microseconds since the Unix epoch.

CREATE TABLE server_meta (
    key        TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE tenants (
    id                  BLOB PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    status              TEXT NOT NULL,
    settings            TEXT NOT NULL,
    current_kek_version INTEGER NOT NULL,
    created_at          INTEGER NOT NULL
) STRICT;

CREATE TABLE tenant_keks (
    tenant_id  BLOB NOT NULL REFERENCES tenants (id),
    version    INTEGER NOT NULL,
    wrapped    BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, version)
) STRICT;

CREATE TABLE environments (
    tenant_id  BLOB NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;

CREATE TABLE principals (
    tenant_id    BLOB NOT NULL REFERENCES tenants (id),
    id           BLOB NOT NULL,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    environments TEXT NOT NULL,
    description  TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
) STRICT;

CREATE TABLE identity_bindings (
    tenant_id    BLOB NOT NULL,
    id           BLOB NOT NULL,
    principal_id BLOB NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('exact', 'prefix')),
    pattern      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, kind, pattern),
    FOREIGN KEY (tenant_id, principal_id) REFERENCES principals (tenant_id, id) ON DELETE CASCADE
) STRICT;

CREATE INDEX identity_bindings_pattern ON identity_bindings (kind, pattern);

CREATE TABLE credentials (
    tenant_id       BLOB NOT NULL,
    id              BLOB NOT NULL,
    environment     TEXT NOT NULL,
    name            TEXT NOT NULL,
    service         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    description     TEXT NOT NULL,
    tags            TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    owner           TEXT,
    status          TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    latest_version  INTEGER NOT NULL,
    rotated_at      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    revoked_at      INTEGER,
    revoke_reason   TEXT,
    destroyed_at    INTEGER,
    rotation        TEXT,
    injection       TEXT,
    created_by      BLOB NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, environment, name),
    FOREIGN KEY (tenant_id, environment) REFERENCES environments (tenant_id, name)
) STRICT;

CREATE INDEX credentials_service ON credentials (tenant_id, service, environment);

CREATE TABLE credential_versions (
    tenant_id     BLOB NOT NULL,
    credential_id BLOB NOT NULL,
    version       INTEGER NOT NULL,
    envelope      BLOB,
    kek_version   INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    BLOB NOT NULL,
    PRIMARY KEY (tenant_id, credential_id, version),
    FOREIGN KEY (tenant_id, credential_id) REFERENCES credentials (tenant_id, id) ON DELETE CASCADE
) STRICT;

CREATE TABLE grants (
    tenant_id    BLOB NOT NULL REFERENCES tenants (id),
    id           BLOB NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('principal', 'role')),
    subject      TEXT NOT NULL,
    selector     TEXT NOT NULL,
    environments TEXT NOT NULL,
    capabilities INTEGER NOT NULL,
    destinations TEXT NOT NULL,
    expires_at   INTEGER,
    reason       TEXT NOT NULL,
    granted_by   BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE INDEX grants_subject ON grants (tenant_id, subject_kind, subject);

CREATE TABLE audit_heads (
    tenant_id BLOB PRIMARY KEY REFERENCES tenants (id),
    sequence  INTEGER NOT NULL,
    hash      BLOB NOT NULL
) STRICT;

CREATE TABLE audit_events (
    tenant_id       BLOB NOT NULL REFERENCES tenants (id),
    sequence        INTEGER NOT NULL,
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
    hash            BLOB NOT NULL,
    PRIMARY KEY (tenant_id, sequence)
) STRICT;

CREATE INDEX audit_events_credential ON audit_events (tenant_id, credential_id, sequence);

CREATE INDEX audit_events_principal ON audit_events (tenant_id, principal_id, sequence);
