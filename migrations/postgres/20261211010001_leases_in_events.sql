-- A reveal's lease is recorded by the reveal's own audit event, not by a
-- row of its own: the event gets the lease's columns that it does not
-- already hold (id, grant, TTL, issue, expiry and latest expiry; the
-- credential, its name, environment and version, the principal, the
-- purpose and on-behalf-of are the event's). A lease gets its row in
-- `leases` the first time something changes it (a renewal, a release, a
-- revocation, the sweeper's expiry), copied from its event under the
-- tenant's chain-head lock, which every lease writer takes first. Until
-- then it is active, and the store reads it from its event: the store's
-- lease reads are over both (the `LEASES` source in the store's
-- leases.rs).
--
-- What this saves a reveal: the lease row (its heap tuple, its key, four
-- secondary indexes and its row-level-security check), about 12 µs of
-- PostgreSQL's CPU a reveal on the machines measured, which was the whole
-- of the reveal path's slowdown against the server before stored leases.
-- What it costs: six columns of the event and two partial indexes, both
-- inserted near their right edge (lease ids are time-ordered; expiries
-- are the issue time plus a TTL).
--
-- The lease's times in these columns are not covered by the event's hash
-- (its detail covers the lease id, TTL and grant), as the rows of
-- `leases` never were: the chain proves what was revealed and under
-- which lease, the columns serve the lease's lifecycle.
--
-- Servers before this migration read leases from `leases` only: they do
-- not see the leases a newer server records in events. Upgrade across it
-- in one step (no older replica serving once a newer one does), and roll
-- back across it only by restoring the backup taken before (see
-- docs/operations.md, "Upgrade and rollback").
--
-- The sweeper's mark (`audit_heads.leases_swept_through`): every lease
-- event of the tenant whose lease ran out by then has its row. The sweeper
-- only looks past it. A batch that commits a lease which ran out before
-- the mark (decided before the sweeper passed, committed after) gives that
-- lease its row at once. `audit_heads.leases_due_at` is the earliest
-- expiry of a lease event past the mark, or earlier (lowered by every
-- batch, reset by the sweeper): the sweeper visits the tenants whose due
-- time has come.
ALTER TABLE audit_events
    ADD COLUMN lease_id             UUID,
    ADD COLUMN lease_grant          UUID,
    ADD COLUMN lease_ttl_secs       BIGINT,
    ADD COLUMN lease_issued_at      BIGINT,
    ADD COLUMN lease_expires_at     BIGINT,
    ADD COLUMN lease_max_expires_at BIGINT;
-- A lease event holds all of its lease's columns (the grant may be NULL),
-- any other event none: a lease with no expiry would be invisible to the
-- sweeper's search.
ALTER TABLE audit_events ADD CONSTRAINT audit_events_lease_columns CHECK (
    (lease_id IS NULL) = (lease_ttl_secs IS NULL)
    AND (lease_id IS NULL) = (lease_issued_at IS NULL)
    AND (lease_id IS NULL) = (lease_expires_at IS NULL)
    AND (lease_id IS NULL) = (lease_max_expires_at IS NULL)
    AND (lease_id IS NOT NULL OR lease_grant IS NULL)
) NOT VALID;
-- The two indexes on these columns are built by the next two migrations,
-- without blocking writes (CREATE INDEX CONCURRENTLY, which cannot run in
-- this migration's transaction). The constraint is NOT VALID for the same
-- reason: validating it would read the whole table under a lock, and
-- every row before this migration has none of the columns set.

ALTER TABLE audit_heads
    ADD COLUMN leases_swept_through BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN leases_due_at        BIGINT;

-- The lease sweeper's mode reads every tenant's head, to find the tenants
-- with leases due (`leases_due_at`); it writes each tenant's in a
-- transaction bound to that tenant.
CREATE POLICY lease_sweep_read ON audit_heads FOR SELECT
    USING (current_setting('strongroom.lease_sweep', true) = 'on');

-- `append_checked_events` gets the events' lease columns (`e_lease_*`,
-- NULL for an event that opens no lease). The lease arrays (`l_*`) stay,
-- for a lease whose event does not hold its columns. Everything else is
-- as migration 20261210010001 describes.
DROP FUNCTION append_checked_events(
    UUID, BIGINT[], UUID[], BIGINT[], UUID[], TEXT[], TEXT[], TEXT[], UUID[],
    TEXT[], INTEGER[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[],
    TEXT[], BYTEA[], BYTEA[], BIGINT, BYTEA, BIGINT, BYTEA, BIGINT, UUID[],
    BIGINT[], UUID[], TEXT[], UUID[], UUID[], INTEGER[], UUID[], UUID[],
    TEXT[], TEXT[], INTEGER[], UUID[], UUID[], TEXT[], TEXT[], BIGINT[],
    BIGINT[], BIGINT[], BIGINT[]);

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
    l_max_expires_at  BIGINT[],
    e_lease_id              UUID[],
    e_lease_grant           UUID[],
    e_lease_ttl_secs        BIGINT[],
    e_lease_issued_at       BIGINT[],
    e_lease_expires_at      BIGINT[],
    e_lease_max_expires_at  BIGINT[]
) RETURNS TEXT
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    head_sequence BIGINT;
    head_hash     BYTEA;
    head_swept    BIGINT;
BEGIN
    PERFORM set_config('strongroom.tenant_id', p_tenant::text, true);
    SELECT sequence, hash, leases_swept_through
        INTO head_sequence, head_hash, head_swept FROM audit_heads
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
        reason_code, peer, request_id, trace_id, detail, prev_hash, hash, format,
        lease_id, lease_grant, lease_ttl_secs, lease_issued_at, lease_expires_at,
        lease_max_expires_at)
    SELECT p_tenant, u.*
    FROM unnest(e_sequence, e_id, e_at, e_principal, e_actor, e_on_behalf_of,
                e_action, e_credential, e_credential_name, e_version,
                e_environment, e_purpose, e_outcome, e_reason_code, e_peer,
                e_request_id, e_trace_id, e_detail, e_prev_hash, e_hash, e_format,
                e_lease_id, e_lease_grant, e_lease_ttl_secs, e_lease_issued_at,
                e_lease_expires_at, e_lease_max_expires_at) AS u;
    -- A lease that ran out before the sweeper's mark (its reveal was
    -- decided before the sweeper last passed and committed after): the
    -- sweeper only looks past its mark, so the lease gets its row now and
    -- the sweeper finds it among the stored ones.
    IF EXISTS (SELECT 1 FROM unnest(e_lease_expires_at) AS x WHERE x <= head_swept) THEN
        INSERT INTO leases (
            tenant_id, id, credential_id, credential_name, environment, version,
            principal_id, grant_id, on_behalf_of, purpose, ttl_secs, issued_at,
            expires_at, max_expires_at, state)
        SELECT p_tenant, e.lease_id, e.credential_id, e.credential_name,
               e.environment, e.version, e.principal_id, e.lease_grant,
               e.on_behalf_of, e.purpose, e.lease_ttl_secs, e.lease_issued_at,
               e.lease_expires_at, e.lease_max_expires_at, 'active'
        FROM audit_events e
        WHERE e.tenant_id = p_tenant AND e.sequence > p_from AND e.sequence <= p_to
          AND e.lease_id IS NOT NULL AND e.lease_expires_at <= head_swept;
    END IF;
    -- Leases whose event does not hold all of their columns (never, from
    -- this server's reveals; kept so that no lease depends on it).
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
    -- LEAST ignores NULL: a batch without leases leaves the due time as it was.
    UPDATE audit_heads SET sequence = p_to, hash = p_to_hash,
        leases_due_at = LEAST(leases_due_at, (SELECT min(x) FROM unnest(e_lease_expires_at) AS x))
        WHERE tenant_id = p_tenant;
    RETURN 'ok';
END
$$;

REVOKE ALL ON FUNCTION append_checked_events FROM PUBLIC;
GRANT EXECUTE ON FUNCTION append_checked_events TO strongroom_app;
