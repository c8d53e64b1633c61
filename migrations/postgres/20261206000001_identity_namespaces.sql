-- Identity namespaces: the identities a tenant's admins may bind, assigned
-- by platform operators. A platform-level table, outside tenant row-level
-- security: namespaces of different tenants never overlap, which the server
-- checks while holding an EXCLUSIVE lock on this table (binding creation
-- takes a SHARE lock), so two concurrent assignments cannot both succeed.
--
-- Existing tenants get the namespaces their bindings imply. A binding too
-- broad to be a namespace (`spiffe://*`, `s*`, ...), or overlapping an older
-- binding of another tenant, is disabled instead: authentication ignores it,
-- and `strongroomd migrate` lists it. The validity rules below mirror
-- `IdentityPattern::scope_problem` in strongroom-core.

CREATE TABLE identity_namespaces (
    tenant_id  UUID NOT NULL REFERENCES tenants (id),
    kind       TEXT NOT NULL CHECK (kind IN ('exact', 'prefix')),
    pattern    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (kind, pattern)
);
CREATE INDEX identity_namespaces_tenant ON identity_namespaces (tenant_id);

-- NULL: enabled. Otherwise why authentication ignores the binding.
ALTER TABLE identity_bindings ADD COLUMN disabled_reason TEXT;

-- DELETE also allows LOCK TABLE in SHARE and EXCLUSIVE modes.
GRANT SELECT, INSERT, DELETE ON identity_namespaces TO strongroom_app;
GRANT UPDATE (disabled_reason) ON identity_bindings TO strongroom_app;

-- The migrating role owns the table; let it see every tenant's rows for the
-- backfill below, then force row-level security again.
ALTER TABLE identity_bindings NO FORCE ROW LEVEL SECURITY;

-- 1. Bindings that cannot be a namespace. Prefix patterns are stored
-- without their `*`.
UPDATE identity_bindings SET disabled_reason = 'too broad: not a valid identity namespace'
WHERE NOT (
    CASE
        WHEN substr(pattern, 1, 9) = 'spiffe://' THEN
            strpos(substr(pattern, 10), '/') > 1
            AND length(substr(pattern, 10)) > strpos(substr(pattern, 10), '/')
            AND strpos(substr(pattern, 10), '//') = 0
            AND (CASE WHEN kind = 'prefix'
                      THEN substr(pattern, length(pattern), 1) = '/'
                      ELSE substr(pattern, length(pattern), 1) <> '/' END)
        WHEN kind = 'exact' THEN TRUE
        ELSE
            length(pattern) >= 2
            AND substr(pattern, length(pattern), 1) IN ('.', '-', '_', ':', '/', '@')
            AND substr(pattern, length(pattern) - 1, 1) NOT IN ('.', '-', '_', ':', '/', '@')
            AND substr(pattern, 1, 7) <> 'spiffe:'
            AND substr('spiffe://', 1, length(pattern)) <> pattern
    END
);

-- 2. Bindings overlapping an older enabled binding of another tenant.
UPDATE identity_bindings AS b SET disabled_reason = 'overlaps an identity bound in another tenant'
WHERE b.disabled_reason IS NULL AND EXISTS (
    SELECT 1 FROM identity_bindings o
    WHERE o.tenant_id <> b.tenant_id
      AND o.disabled_reason IS NULL
      AND (o.created_at, o.id) < (b.created_at, b.id)
      AND ((o.kind = 'exact' AND b.kind = 'exact' AND o.pattern = b.pattern)
           OR (o.kind = 'prefix' AND substr(b.pattern, 1, length(o.pattern)) = o.pattern)
           OR (b.kind = 'prefix' AND substr(o.pattern, 1, length(b.pattern)) = b.pattern)));

-- 3. Each remaining binding not inside another of its tenant's becomes a
-- namespace of its tenant.
INSERT INTO identity_namespaces (tenant_id, kind, pattern, created_at)
SELECT b.tenant_id, b.kind, b.pattern, b.created_at
FROM identity_bindings b
WHERE b.disabled_reason IS NULL AND NOT EXISTS (
    SELECT 1 FROM identity_bindings c
    WHERE c.tenant_id = b.tenant_id
      AND c.disabled_reason IS NULL
      AND c.id <> b.id
      AND c.kind = 'prefix'
      AND substr(b.pattern, 1, length(c.pattern)) = c.pattern);

ALTER TABLE identity_bindings FORCE ROW LEVEL SECURITY;
