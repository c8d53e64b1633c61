-- Audit events are the busiest insert: every reveal writes one. The foreign
-- key to tenants made each row run a referential check (and share-lock the
-- tenant row) at insert time. A tenant's events are only ever written in the
-- transaction that advances its chain head, and audit_heads keeps its own
-- foreign key to tenants, so the per-row check adds nothing: the head row's
-- key already proves the tenant exists.
ALTER TABLE audit_events DROP CONSTRAINT audit_events_tenant_id_fkey;
