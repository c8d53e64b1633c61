-- Leases: each reveal (and resolve) opens one, stored in the same commit as
-- the reveal's audit event. The holder renews it up to max_expires_at or
-- releases it; the server's sweeper expires it when it runs out; revoking
-- its credential, grant or principal ends it. Rows are never deleted (the
-- history of who used what and for how long); ended leases keep when and
-- why they ended.
CREATE TABLE leases (
    tenant_id       UUID NOT NULL REFERENCES tenants (id),
    id              UUID NOT NULL,
    credential_id   UUID NOT NULL,
    credential_name TEXT NOT NULL,
    environment     TEXT NOT NULL,
    version         INTEGER NOT NULL,
    principal_id    UUID NOT NULL,
    grant_id        UUID,
    on_behalf_of    TEXT,
    purpose         TEXT,
    ttl_secs        BIGINT NOT NULL,
    issued_at       BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    max_expires_at  BIGINT NOT NULL,
    state           TEXT NOT NULL
        CHECK (state IN ('active', 'released', 'expired', 'revoked')),
    ended_at        BIGINT,
    end_reason      TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX leases_credential ON leases (tenant_id, credential_id, id);
CREATE INDEX leases_principal ON leases (tenant_id, principal_id, id);
CREATE INDEX leases_grant ON leases (tenant_id, grant_id) WHERE state = 'active';
CREATE INDEX leases_due ON leases (expires_at) WHERE state = 'active';

ALTER TABLE leases ENABLE ROW LEVEL SECURITY;
ALTER TABLE leases FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON leases
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
-- The lease sweeper finds the tenants with leases that ran out without
-- being bound to one: a transaction that sets `strongroom.lease_sweep`
-- may read (never write) every tenant's leases. It writes each tenant's
-- in a transaction bound to that tenant.
CREATE POLICY lease_sweep_read ON leases FOR SELECT
    USING (current_setting('strongroom.lease_sweep', true) = 'on');

GRANT SELECT, INSERT, UPDATE ON leases TO strongroom_app;

-- `append_checked_events` (migration 20261206000007) is replaced by the
-- same function with the batch's leases as column arrays (`l_*`), inserted
-- after the reveal checks pass, in the same statement: the reveal path
-- gains no round trip. Everything else is as migration 20261206000003
-- describes.
DROP FUNCTION append_checked_events(
    UUID, BIGINT[], UUID[], BIGINT[], UUID[], TEXT[], TEXT[], TEXT[], UUID[],
    TEXT[], INTEGER[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[],
    TEXT[], BYTEA[], BYTEA[], BIGINT, BYTEA, BIGINT, BYTEA, BIGINT, UUID[],
    BIGINT[], UUID[], TEXT[], UUID[], UUID[], INTEGER[]);

CREATE FUNCTION append_checked_events(
    p_tenant          UUID,
    e_sequence        BIGINT[],
    e_id              UUID[],
    e_at              BIGINT[],
    e_principal       UUID[],
    e_actor           TEXT[],
    e_on_behalf_of    TEXT[],
    e_action          TEXT[],
    e_credential      UUID[],
    e_credential_name TEXT[],
    e_version         INTEGER[],
    e_environment     TEXT[],
    e_purpose         TEXT[],
    e_outcome         TEXT[],
    e_reason_code     TEXT[],
    e_peer            TEXT[],
    e_request_id      TEXT[],
    e_trace_id        TEXT[],
    e_detail          TEXT[],
    e_prev_hash       BYTEA[],
    e_hash            BYTEA[],
    p_to              BIGINT,
    p_to_hash         BYTEA,
    p_from            BIGINT,
    p_from_hash       BYTEA,
    p_now             BIGINT,
    k_credential      UUID[],
    k_version         BIGINT[],
    k_principal       UUID[],
    k_role            TEXT[],
    k_grant           UUID[],
    k_binding         UUID[],
    e_format          INTEGER[],
    l_id              UUID[],
    l_credential      UUID[],
    l_credential_name TEXT[],
    l_environment     TEXT[],
    l_version         INTEGER[],
    l_principal       UUID[],
    l_grant           UUID[],
    l_on_behalf_of    TEXT[],
    l_purpose         TEXT[],
    l_ttl_secs        BIGINT[],
    l_issued_at       BIGINT[],
    l_expires_at      BIGINT[],
    l_max_expires_at  BIGINT[]
) RETURNS TEXT
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    head_sequence BIGINT;
    head_hash     BYTEA;
BEGIN
    PERFORM set_config('strongroom.tenant_id', p_tenant::text, true);
    SELECT sequence, hash INTO head_sequence, head_hash FROM audit_heads
        WHERE tenant_id = p_tenant
        FOR UPDATE;
    IF head_sequence = p_to AND head_hash = p_to_hash THEN
        -- This very batch committed already (its reply was lost and the
        -- caller sent it again): the head's hash commits to its events.
        RETURN 'ok';
    END IF;
    IF head_sequence > p_to AND EXISTS (
        SELECT 1 FROM audit_events
        WHERE tenant_id = p_tenant AND sequence = p_to AND hash = p_to_hash) THEN
        -- It committed, and another writer appended after it before the
        -- batch was sent again: its last event is still in the chain (its
        -- hash commits to every event of the batch).
        RETURN 'ok';
    END IF;
    IF head_sequence IS DISTINCT FROM p_from OR head_hash IS DISTINCT FROM p_from_hash THEN
        RETURN 'moved';
    END IF;
    -- A join on the primary keys (index lookups for the batch's few
    -- checks), not NOT EXISTS subqueries in an OR, which the planner may run
    -- as hashed subplans that read every credential of the table.
    IF (SELECT count(*)
        FROM unnest(k_credential, k_version, k_principal, k_role, k_grant, k_binding)
            AS k(credential_id, version, principal_id, role, grant_id, binding_id)
        JOIN credentials c
            ON c.tenant_id = p_tenant AND c.id = k.credential_id
        JOIN principals p
            ON p.tenant_id = p_tenant AND p.id = k.principal_id
        JOIN tenants t
            ON t.id = p_tenant
        LEFT JOIN grants g
            ON g.tenant_id = p_tenant AND g.id = k.grant_id
        LEFT JOIN identity_bindings b
            ON b.tenant_id = p_tenant AND b.id = k.binding_id
        WHERE c.status = 'active' AND c.destroyed_at IS NULL
          AND (c.expires_at IS NULL OR p_now < c.expires_at)
          AND c.current_version = k.version
          AND p.status = 'active' AND p.role = k.role
          AND t.status = 'active'
          AND (k.grant_id IS NULL
               OR (g.id IS NOT NULL
                   AND (g.expires_at IS NULL OR p_now < g.expires_at)))
          AND (k.binding_id IS NULL
               OR (b.principal_id = k.principal_id AND b.disabled_reason IS NULL))
       ) <> cardinality(k_credential) THEN
        RETURN 'stale';
    END IF;
    INSERT INTO audit_events (
        tenant_id, sequence, id, at, principal_id, actor, on_behalf_of, action,
        credential_id, credential_name, version, environment, purpose, outcome,
        reason_code, peer, request_id, trace_id, detail, prev_hash, hash, format)
    SELECT p_tenant, u.*
    FROM unnest(e_sequence, e_id, e_at, e_principal, e_actor, e_on_behalf_of,
                e_action, e_credential, e_credential_name, e_version,
                e_environment, e_purpose, e_outcome, e_reason_code, e_peer,
                e_request_id, e_trace_id, e_detail, e_prev_hash, e_hash, e_format) AS u;
    IF cardinality(l_id) > 0 THEN
        INSERT INTO leases (
            tenant_id, id, credential_id, credential_name, environment, version,
            principal_id, grant_id, on_behalf_of, purpose, ttl_secs, issued_at,
            expires_at, max_expires_at, state)
        SELECT p_tenant, l.*, 'active'
        FROM unnest(l_id, l_credential, l_credential_name, l_environment,
                    l_version, l_principal, l_grant, l_on_behalf_of, l_purpose,
                    l_ttl_secs, l_issued_at, l_expires_at, l_max_expires_at) AS l;
    END IF;
    UPDATE audit_heads SET sequence = p_to, hash = p_to_hash
        WHERE tenant_id = p_tenant;
    RETURN 'ok';
END
$$;

REVOKE ALL ON FUNCTION append_checked_events FROM PUBLIC;
GRANT EXECUTE ON FUNCTION append_checked_events TO strongroom_app;
