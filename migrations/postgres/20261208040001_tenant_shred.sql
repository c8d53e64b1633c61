-- Crypto-shredding a tenant (AdminService.ShredTenant).
--
-- 1. A shred deletes the tenant's wrapped KEK versions: the server role may
--    delete KEK rows (row-level security still confines it to the tenant
--    its transaction is bound to).
-- 2. A shred that purges deletes the tenant's metadata: leases, access
--    requests and notification deliveries become deletable too.
-- 3. The audit chain stays append-only for the server role: it may not
--    delete audit events or chain heads. purge_shredded_audit deletes them
--    for one tenant, and only once that tenant is marked shredded (in the
--    calling transaction), so no live tenant's chain can be cut through it.

GRANT DELETE ON tenant_keks TO strongroom_app;
GRANT DELETE ON leases TO strongroom_app;
GRANT DELETE ON access_requests TO strongroom_app;
GRANT DELETE ON notification_deliveries TO strongroom_app;

CREATE OR REPLACE FUNCTION purge_shredded_audit(p_tenant UUID) RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    deleted BIGINT;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM tenants WHERE id = p_tenant AND status = 'shredded') THEN
        RAISE EXCEPTION 'the audit chain of tenant % is kept: it is not shredded', p_tenant
            USING ERRCODE = '55000';
    END IF;
    DELETE FROM audit_events WHERE tenant_id = p_tenant;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    DELETE FROM audit_heads WHERE tenant_id = p_tenant;
    RETURN deleted;
END
$$;

REVOKE ALL ON FUNCTION purge_shredded_audit(UUID) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION purge_shredded_audit(UUID) TO strongroom_app;
