-- Idempotent retries: one row per mutating call that carried a client's
-- request_id, keyed by (scope, caller, call, request id), kept until
-- expires_at (the retention window, 24 hours by default). The request is
-- never stored: fingerprint is an HMAC-SHA256 of it under a key derived
-- from the root key, so a database reader cannot test guesses of a value
-- it carried. response is the first call's encoded response (metadata
-- only: no call that records one answers with a secret value), NULL while
-- the call is in progress.
--
-- scope_id is the caller's tenant, or the nil UUID for a platform
-- operator's call. No foreign key: records do not hold a tenant's
-- shredding back (they expire on their own).
CREATE TABLE idempotency_keys (
    scope_id    UUID NOT NULL,
    principal   TEXT NOT NULL,
    rpc         TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    fingerprint BYTEA NOT NULL,
    claimed_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    response    BYTEA,
    PRIMARY KEY (scope_id, principal, rpc, request_id)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency_keys
    USING (scope_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (scope_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
-- Platform operators' records, in platform transactions only.
CREATE POLICY platform_own ON idempotency_keys
    USING (scope_id = '00000000-0000-0000-0000-000000000000'::uuid
           AND current_setting('strongroom.platform', true) = 'on')
    WITH CHECK (scope_id = '00000000-0000-0000-0000-000000000000'::uuid
                AND current_setting('strongroom.platform', true) = 'on');
-- The server's sweeper (its transaction sets `strongroom.lease_sweep`, as
-- for expiring leases) purges every tenant's expired records.
CREATE POLICY sweep_read ON idempotency_keys FOR SELECT
    USING (current_setting('strongroom.lease_sweep', true) = 'on');
CREATE POLICY sweep_purge ON idempotency_keys FOR DELETE
    USING (current_setting('strongroom.lease_sweep', true) = 'on');

GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO strongroom_app;
