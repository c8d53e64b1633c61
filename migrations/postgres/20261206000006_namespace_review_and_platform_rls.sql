-- Namespaces derived from bindings by 20261206000001 are marked for
-- review. That migration copied each namespace's created_at from the binding
-- it came from; an operator's assignment takes the time of the call, so a
-- row matching a binding of its tenant in kind, pattern and created_at is a
-- derived one. `strongroomd migrate` (and start-up) removes derived SPIFFE
-- prefix namespaces shallower than `identity.min_namespace_depth`, disabling
-- the bindings they covered, and prints the rest for review; the mark goes
-- when a platform operator assigns the tenant's namespaces.
ALTER TABLE identity_namespaces ADD COLUMN derived BOOLEAN NOT NULL DEFAULT FALSE;

ALTER TABLE identity_bindings NO FORCE ROW LEVEL SECURITY;
UPDATE identity_namespaces AS n SET derived = TRUE
WHERE EXISTS (
    SELECT 1 FROM identity_bindings b
    WHERE b.tenant_id = n.tenant_id AND b.kind = n.kind
      AND b.pattern = n.pattern AND b.created_at = n.created_at);
ALTER TABLE identity_bindings FORCE ROW LEVEL SECURITY;

-- Platform-level tables under row-level security too: a tenant-bound
-- transaction sees only its own tenant's namespaces and nothing of the
-- platform audit chain; only platform mode writes them.
ALTER TABLE identity_namespaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity_namespaces FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON identity_namespaces FOR SELECT
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY platform_all ON identity_namespaces
    USING (current_setting('strongroom.platform', true) = 'on')
    WITH CHECK (current_setting('strongroom.platform', true) = 'on');

ALTER TABLE platform_audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE platform_audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_all ON platform_audit_events
    USING (current_setting('strongroom.platform', true) = 'on')
    WITH CHECK (current_setting('strongroom.platform', true) = 'on');

ALTER TABLE platform_audit_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE platform_audit_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_all ON platform_audit_heads
    USING (current_setting('strongroom.platform', true) = 'on')
    WITH CHECK (current_setting('strongroom.platform', true) = 'on');
