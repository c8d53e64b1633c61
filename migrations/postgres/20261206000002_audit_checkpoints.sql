-- Signed checkpoints and the platform-level audit chain.
--
-- 1. The platform chain: events that belong to no tenant (failed
--    authentication), hash-chained exactly like a tenant's chain (hashed
--    under the nil tenant id, which no tenant has). Platform-level tables:
--    outside tenant row-level security, append-only for the server role
--    (no UPDATE or DELETE on the events). The head is one row, locked by
--    each append.
-- 2. The scheduled checkpoint task and platform operators read every
--    tenant's chain head (sequence and hash: no tenant data) in platform
--    mode.
-- 3. append_checked_events: a batch sent again after a lost reply, when
--    another writer appended after it meanwhile, is recognised as committed
--    (its last event is in the chain) instead of being answered 'moved' and
--    recorded a second time.

CREATE TABLE platform_audit_heads (
    id       SMALLINT PRIMARY KEY CHECK (id = 1),
    sequence BIGINT NOT NULL,
    hash     BYTEA NOT NULL
);
INSERT INTO platform_audit_heads (id, sequence, hash) VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE platform_audit_events (
    tenant_id       UUID NOT NULL,
    sequence        BIGINT NOT NULL PRIMARY KEY,
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
    hash            BYTEA NOT NULL
);
CREATE INDEX platform_audit_events_at ON platform_audit_events (at);

GRANT SELECT, UPDATE ON platform_audit_heads TO strongroom_app;
GRANT SELECT, INSERT ON platform_audit_events TO strongroom_app;

CREATE POLICY platform_read ON audit_heads FOR SELECT
    USING (current_setting('strongroom.platform', true) = 'on');

CREATE OR REPLACE FUNCTION append_checked_events(
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
    k_grant           UUID[]
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
        -- hash commits to every event of the batch). Answering 'moved' here
        -- would make the caller record the batch a second time.
        RETURN 'ok';
    END IF;
    IF head_sequence IS DISTINCT FROM p_from OR head_hash IS DISTINCT FROM p_from_hash THEN
        RETURN 'moved';
    END IF;
    -- A join on the primary keys (index lookups for the batch's few
    -- checks), not NOT EXISTS subqueries in an OR, which the planner may run
    -- as hashed subplans that read every credential of the table.
    IF (SELECT count(*)
        FROM unnest(k_credential, k_version, k_principal, k_role, k_grant)
            AS k(credential_id, version, principal_id, role, grant_id)
        JOIN credentials c
            ON c.tenant_id = p_tenant AND c.id = k.credential_id
        JOIN principals p
            ON p.tenant_id = p_tenant AND p.id = k.principal_id
        JOIN tenants t
            ON t.id = p_tenant
        LEFT JOIN grants g
            ON g.tenant_id = p_tenant AND g.id = k.grant_id
        WHERE c.status = 'active' AND c.destroyed_at IS NULL
          AND (c.expires_at IS NULL OR p_now < c.expires_at)
          AND c.current_version = k.version
          AND p.status = 'active' AND p.role = k.role
          AND t.status = 'active'
          AND (k.grant_id IS NULL
               OR (g.id IS NOT NULL
                   AND (g.expires_at IS NULL OR p_now < g.expires_at)))
       ) <> cardinality(k_credential) THEN
        RETURN 'stale';
    END IF;
    INSERT INTO audit_events (
        tenant_id, sequence, id, at, principal_id, actor, on_behalf_of, action,
        credential_id, credential_name, version, environment, purpose, outcome,
        reason_code, peer, request_id, trace_id, detail, prev_hash, hash)
    SELECT p_tenant, u.*
    FROM unnest(e_sequence, e_id, e_at, e_principal, e_actor, e_on_behalf_of,
                e_action, e_credential, e_credential_name, e_version,
                e_environment, e_purpose, e_outcome, e_reason_code, e_peer,
                e_request_id, e_trace_id, e_detail, e_prev_hash, e_hash) AS u;
    UPDATE audit_heads SET sequence = p_to, hash = p_to_hash
        WHERE tenant_id = p_tenant;
    RETURN 'ok';
END
$$;

