-- A batch of audit events only (reveals and denials) committed in one round
-- trip: the server calls this function as a statement of its own, which
-- PostgreSQL runs and commits as one transaction. In order, each statement
-- with a fresh snapshot (read committed):
--
--   1. binds the transaction to the tenant (row-level security applies: the
--      function runs with its caller's rights);
--   2. locks the tenant's chain head; if it is already (`p_to`, `p_to_hash`),
--      this batch committed before (a retry after a lost reply) and 'ok' is
--      returned; if it is not the one the caller sealed the events on
--      (`p_from`, `p_from_hash`), another writer moved it: 'moved', nothing
--      written;
--   3. re-checks, after the lock, every reveal the batch records against the
--      state committed now: credential active, not destroyed, not expired
--      and still at the version revealed; principal active with the same
--      role in an active tenant; grant, if one allowed it, present and
--      unexpired. Any failure returns 'stale' and writes nothing (the caller
--      then runs the batch on its full path, which finds the failing job);
--   4. inserts the events and advances the head to (`p_to`, `p_to_hash`),
--      returning 'ok'.
--
-- The checks mirror `States::violation` in strongroom-store; the conformance
-- case stale_reveal_checks_append_nothing covers each of them on this path.
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

REVOKE ALL ON FUNCTION append_checked_events FROM PUBLIC;
GRANT EXECUTE ON FUNCTION append_checked_events TO strongroom_app;
