-- The reveal check of `append_checked_events` looks each row up by its
-- primary key. Its joins of the batch's arrays with the credentials,
-- principals, grants and identity bindings were planned, once the
-- function's statements had generic plans, as hash joins over sequential
-- scans whenever a table was small by the planner's estimate (a tenant
-- with a thousand credentials): every batch read every credential row,
-- about 0.13 ms a batch at a thousand rows and growing with the table.
-- Each row is now a LATERAL subquery with LIMIT 1, which stays a nested
-- loop over the primary-key index. What the function refuses is
-- unchanged: a credential part whose rows do not all hold, a tenant not
-- active (when the batch checks anything), a holder part whose rows do
-- not all hold; malformed check arrays are refused as well. The signature
-- is unchanged.
--
-- The function also runs its statements on generic plans
-- (`plan_cache_mode`): with the batch's arrays as parameters, PostgreSQL
-- judged a plan made for each call's values cheaper and planned the reveal
-- check's subqueries again on every call, about a third of the database's
-- CPU on the relay's small batches. The generic plans are the ones the
-- statements are written for: index lookups one row at a time (above)
-- and inserts from the arrays.
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
SET plan_cache_mode = force_generic_plan
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
    -- The reveal checks, in two parts: each credential (with the version
    -- it was decided on) and each holder (principal, role, grant, identity
    -- binding), as the caller sent them (deduplicated; a repeated row is
    -- checked again and counted again, so the rule holds either way), plus
    -- the tenant's status once. Each row is looked up by its primary key in
    -- a LATERAL subquery with LIMIT 1, which the planner cannot turn into a
    -- join: the generic plan of a join of the arrays with a small table (a
    -- tenant with a thousand credentials) was a hash join over a sequential
    -- scan of every row of the table, for every batch.
    --
    -- Malformed parts (a NULL array, columns of one part of different
    -- lengths, one part empty and the other not: never what the server
    -- sends) are refused too, so no input skips a check.
    IF k_credential IS NULL OR k_principal IS NULL
       OR cardinality(k_version) IS DISTINCT FROM cardinality(k_credential)
       OR cardinality(k_role) IS DISTINCT FROM cardinality(k_principal)
       OR cardinality(k_grant) IS DISTINCT FROM cardinality(k_principal)
       OR cardinality(k_binding) IS DISTINCT FROM cardinality(k_principal)
       OR (cardinality(k_credential) = 0) <> (cardinality(k_principal) = 0)
       OR cardinality(k_credential) > 0 AND (
        (SELECT count(*)
         FROM unnest(k_credential, k_version) AS k(credential_id, version)
         CROSS JOIN LATERAL (
             SELECT 1 FROM credentials c
             WHERE c.tenant_id = p_tenant AND c.id = k.credential_id
               AND c.status = 'active' AND c.destroyed_at IS NULL
               AND (c.expires_at IS NULL OR p_now < c.expires_at)
               AND c.current_version = k.version
             LIMIT 1) AS c
        ) <> cardinality(k_credential)
     OR (SELECT t.status FROM tenants t WHERE t.id = p_tenant) IS DISTINCT FROM 'active'
     OR (SELECT count(*)
         FROM unnest(k_principal, k_role, k_grant, k_binding)
             AS k(principal_id, role, grant_id, binding_id)
         CROSS JOIN LATERAL (
             SELECT 1 FROM principals p
             WHERE p.tenant_id = p_tenant AND p.id = k.principal_id
               AND p.status = 'active' AND p.role = k.role
             LIMIT 1) AS p
         LEFT JOIN LATERAL (
             SELECT true AS ok FROM grants g
             WHERE g.tenant_id = p_tenant AND g.id = k.grant_id
               AND (g.expires_at IS NULL OR p_now < g.expires_at)
             LIMIT 1) AS g ON true
         LEFT JOIN LATERAL (
             SELECT true AS ok FROM identity_bindings b
             WHERE b.tenant_id = p_tenant AND b.id = k.binding_id
               AND b.principal_id = k.principal_id AND b.disabled_reason IS NULL
             LIMIT 1) AS b ON true
         WHERE (k.grant_id IS NULL OR g.ok)
           AND (k.binding_id IS NULL OR b.ok)
        ) <> cardinality(k_principal)) THEN
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
