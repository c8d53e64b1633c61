-- Namespaces derived from bindings by 20261206000001 are marked for
-- review (see the Postgres migration of the same name; SQLite has no
-- row-level security, so only the mark is added here).
ALTER TABLE identity_namespaces ADD COLUMN derived INTEGER NOT NULL DEFAULT 0;

UPDATE identity_namespaces SET derived = 1
WHERE EXISTS (
    SELECT 1 FROM identity_bindings b
    WHERE b.tenant_id = identity_namespaces.tenant_id AND b.kind = identity_namespaces.kind
      AND b.pattern = identity_namespaces.pattern AND b.created_at = identity_namespaces.created_at);
