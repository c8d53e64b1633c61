-- What a stored lease costs the reveal path, cut (reveal throughput at 64
-- in flight must stay within 10 % of the server before stored leases).
--
-- 1. The lease's reference to its tenant goes: checking it locked the
--    tenant's row (FOR KEY SHARE) for every lease a batch inserted. Leases
--    are inserted only by their tenant's audit batches, bound to the tenant
--    (row-level security), and a tenant's purge deletes its leases with
--    the rest of its rows (`PURGE` in the store's tenants.rs), so the
--    reference guarded nothing the writers do not.
--
-- 2. `append_checked_events` keeps its signature (the arguments are the
--    same arrays) but checks the reveals of a batch in two parts, each
--    distinct row once (see the comment in the body). The server sends
--    each part deduplicated; what the function refuses is unchanged.
ALTER TABLE leases DROP CONSTRAINT leases_tenant_id_fkey;

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
    -- The reveal checks, in two parts: each distinct credential (and the
    -- version it was decided on) once, and each distinct holder (principal,
    -- role, grant, identity binding) once. The conditions of one part never
    -- read the other's columns, so this refuses exactly what checking every
    -- reveal's row in full would; a batch of many reveals by one agent reads
    -- its principal, tenant, grant and binding once instead of once a
    -- reveal. The caller may send each part deduplicated already. Joins on
    -- the primary keys (index lookups), not NOT EXISTS subqueries in an OR,
    -- which the planner may run as hashed subplans that read every row.
    IF (SELECT count(*)
        FROM (SELECT DISTINCT credential_id, version
              FROM unnest(k_credential, k_version) AS k(credential_id, version)) AS k
        JOIN credentials c
            ON c.tenant_id = p_tenant AND c.id = k.credential_id
        WHERE c.status = 'active' AND c.destroyed_at IS NULL
          AND (c.expires_at IS NULL OR p_now < c.expires_at)
          AND c.current_version = k.version
       ) <> (SELECT count(*)
             FROM (SELECT DISTINCT credential_id, version
                   FROM unnest(k_credential, k_version) AS k(credential_id, version)) AS k)
    OR (SELECT count(*)
        FROM (SELECT DISTINCT principal_id, role, grant_id, binding_id
              FROM unnest(k_principal, k_role, k_grant, k_binding)
                  AS k(principal_id, role, grant_id, binding_id)) AS k
        JOIN principals p
            ON p.tenant_id = p_tenant AND p.id = k.principal_id
        JOIN tenants t
            ON t.id = p_tenant
        LEFT JOIN grants g
            ON g.tenant_id = p_tenant AND g.id = k.grant_id
        LEFT JOIN identity_bindings b
            ON b.tenant_id = p_tenant AND b.id = k.binding_id
        WHERE p.status = 'active' AND p.role = k.role
          AND t.status = 'active'
          AND (k.grant_id IS NULL
               OR (g.id IS NOT NULL
                   AND (g.expires_at IS NULL OR p_now < g.expires_at)))
          AND (k.binding_id IS NULL
               OR (b.principal_id = k.principal_id AND b.disabled_reason IS NULL))
       ) <> (SELECT count(*)
             FROM (SELECT DISTINCT principal_id, role, grant_id, binding_id
                   FROM unnest(k_principal, k_role, k_grant, k_binding)
                       AS k(principal_id, role, grant_id, binding_id)) AS k) THEN
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
