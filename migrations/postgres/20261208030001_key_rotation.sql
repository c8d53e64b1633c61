-- Key rotation.
--
-- replica_heartbeats: each running server's report of the root keys it
-- holds, by key id (an HKDF fingerprint, not the key), refreshed on a
-- heartbeat. RotateRootKey refuses while a replica seen within the
-- liveness window lacks the next key. Not tenant data, like server_meta.
CREATE TABLE replica_heartbeats (
    replica     TEXT PRIMARY KEY,
    addr        TEXT NOT NULL,
    current_key TEXT NOT NULL,
    next_key    TEXT,
    wraps_with  TEXT NOT NULL,
    seen_at     BIGINT NOT NULL
);
GRANT SELECT, INSERT, UPDATE, DELETE ON replica_heartbeats TO strongroom_app;

-- The key check, the rotation's progress and the wrapped derived keys are
-- replaced by a root-key rotation.
GRANT UPDATE ON server_meta TO strongroom_app;

-- tenant_key_rewraps: each tenant's latest KEK rotation; the background
-- re-wrapping of data keys works through the open ones.
CREATE TABLE tenant_key_rewraps (
    tenant_id   UUID PRIMARY KEY REFERENCES tenants (id),
    kek_version INTEGER NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT
);
ALTER TABLE tenant_key_rewraps ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_key_rewraps FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_key_rewraps
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
-- The background task lists every tenant's open rotation (platform mode).
CREATE POLICY platform_read ON tenant_key_rewraps FOR SELECT
    USING (current_setting('strongroom.platform', true) = 'on');
GRANT SELECT, INSERT, UPDATE ON tenant_key_rewraps TO strongroom_app;

-- A retired KEK version is deleted.
GRANT DELETE ON tenant_keks TO strongroom_app;

-- Data keys still wrapped by an older KEK version are found by version.
CREATE INDEX credential_versions_kek ON credential_versions (tenant_id, kek_version);
