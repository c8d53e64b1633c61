-- strongroom schema, Postgres.
--
-- Every table holding tenant data has a tenant_id column and row-level
-- security (forced, so even the table owner is subject to it when not a
-- superuser). The server connects as a role that is a member of
-- strongroom_app: neither superuser nor BYPASSRLS. Each transaction sets
-- `strongroom.tenant_id`; rows of any other tenant are invisible to it, even
-- if a query forgot its tenant filter. Platform operations (tenant lifecycle,
-- resolving a certificate identity to its principal) set
-- `strongroom.platform = 'on'`, which opens read access to the tenant
-- registry, principals and identity bindings only: never credentials,
-- versions, keys, grants or audit events.
--
-- Times are microseconds since the Unix epoch (UTC), identical on every
-- backend and in the audit hash.

DO $$
BEGIN
    CREATE ROLE strongroom_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

CREATE TABLE server_meta (
    key        TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE tenants (
    id                  UUID PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    status              TEXT NOT NULL,
    settings            TEXT NOT NULL,
    current_kek_version INTEGER NOT NULL,
    created_at          BIGINT NOT NULL
);

CREATE TABLE tenant_keks (
    tenant_id  UUID NOT NULL REFERENCES tenants (id),
    version    INTEGER NOT NULL,
    wrapped    BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

CREATE TABLE environments (
    tenant_id  UUID NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE principals (
    tenant_id    UUID NOT NULL REFERENCES tenants (id),
    id           UUID NOT NULL,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    environments TEXT NOT NULL,
    description  TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE identity_bindings (
    tenant_id    UUID NOT NULL,
    id           UUID NOT NULL,
    principal_id UUID NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('exact', 'prefix')),
    pattern      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, kind, pattern),
    FOREIGN KEY (tenant_id, principal_id) REFERENCES principals (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX identity_bindings_pattern ON identity_bindings (kind, pattern);

CREATE TABLE credentials (
    tenant_id       UUID NOT NULL,
    id              UUID NOT NULL,
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
    rotated_at      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    revoked_at      BIGINT,
    revoke_reason   TEXT,
    destroyed_at    BIGINT,
    rotation        TEXT,
    injection       TEXT,
    created_by      UUID NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, environment, name),
    FOREIGN KEY (tenant_id, environment) REFERENCES environments (tenant_id, name)
);
CREATE INDEX credentials_service ON credentials (tenant_id, service, environment);

CREATE TABLE credential_versions (
    tenant_id     UUID NOT NULL,
    credential_id UUID NOT NULL,
    version       INTEGER NOT NULL,
    envelope      BYTEA,
    kek_version   INTEGER NOT NULL,
    created_at    BIGINT NOT NULL,
    created_by    UUID NOT NULL,
    PRIMARY KEY (tenant_id, credential_id, version),
    FOREIGN KEY (tenant_id, credential_id) REFERENCES credentials (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE grants (
    tenant_id    UUID NOT NULL REFERENCES tenants (id),
    id           UUID NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('principal', 'role')),
    subject      TEXT NOT NULL,
    selector     TEXT NOT NULL,
    environments TEXT NOT NULL,
    capabilities INTEGER NOT NULL,
    destinations TEXT NOT NULL,
    expires_at   BIGINT,
    reason       TEXT NOT NULL,
    granted_by   UUID NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX grants_subject ON grants (tenant_id, subject_kind, subject);

CREATE TABLE audit_heads (
    tenant_id UUID PRIMARY KEY REFERENCES tenants (id),
    sequence  BIGINT NOT NULL,
    hash      BYTEA NOT NULL
);

CREATE TABLE audit_events (
    tenant_id       UUID NOT NULL REFERENCES tenants (id),
    sequence        BIGINT NOT NULL,
    id              UUID NOT NULL,
    at              BIGINT NOT NULL,
    principal_id    UUID,
    actor           TEXT NOT NULL,
    on_behalf_of    TEXT,
    action          TEXT NOT NULL,
    credential_id   UUID,
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
    prev_hash       BYTEA NOT NULL,
    hash            BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, sequence)
);
CREATE INDEX audit_events_credential ON audit_events (tenant_id, credential_id, sequence);
CREATE INDEX audit_events_principal ON audit_events (tenant_id, principal_id, sequence);

-- Row-level security: one tenant per transaction.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY platform_read ON tenants FOR SELECT
    USING (current_setting('strongroom.platform', true) = 'on');
CREATE POLICY platform_update ON tenants FOR UPDATE
    USING (current_setting('strongroom.platform', true) = 'on');

ALTER TABLE tenant_keks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_keks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_keks
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

ALTER TABLE environments ENABLE ROW LEVEL SECURITY;
ALTER TABLE environments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON environments
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

ALTER TABLE principals ENABLE ROW LEVEL SECURITY;
ALTER TABLE principals FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON principals
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY platform_read ON principals FOR SELECT
    USING (current_setting('strongroom.platform', true) = 'on');

ALTER TABLE identity_bindings ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity_bindings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON identity_bindings
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY platform_read ON identity_bindings FOR SELECT
    USING (current_setting('strongroom.platform', true) = 'on');

ALTER TABLE credentials ENABLE ROW LEVEL SECURITY;
ALTER TABLE credentials FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON credentials
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

ALTER TABLE credential_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE credential_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON credential_versions
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

ALTER TABLE grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE grants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON grants
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

ALTER TABLE audit_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_heads
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

-- Privileges of the server role. The audit log is append-only for it: no
-- UPDATE or DELETE on audit_events.
GRANT USAGE ON SCHEMA public TO strongroom_app;
GRANT SELECT, INSERT ON server_meta TO strongroom_app;
GRANT SELECT, INSERT, UPDATE ON tenants TO strongroom_app;
GRANT SELECT, INSERT, UPDATE ON tenant_keks TO strongroom_app;
GRANT SELECT, INSERT, DELETE ON environments TO strongroom_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON principals TO strongroom_app;
GRANT SELECT, INSERT, DELETE ON identity_bindings TO strongroom_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON credentials TO strongroom_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON credential_versions TO strongroom_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON grants TO strongroom_app;
GRANT SELECT, INSERT, UPDATE ON audit_heads TO strongroom_app;
GRANT SELECT, INSERT ON audit_events TO strongroom_app;
