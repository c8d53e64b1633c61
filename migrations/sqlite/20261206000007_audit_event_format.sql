-- Each audit event records the rule it was hashed under, `format`: 1 for
-- the events earlier versions wrote (free-text detail, domain tag
-- `strongroom/audit/v1`), 2 for events whose detail is the canonical
-- encoding of a typed detail (domain tag `strongroom/audit/v2`). Existing
-- rows are format 1 (SQLite cannot drop a column's default; every insert
-- names the format it hashed under).
ALTER TABLE audit_events ADD COLUMN format INTEGER NOT NULL DEFAULT 1
    CHECK (format IN (1, 2));
ALTER TABLE platform_audit_events ADD COLUMN format INTEGER NOT NULL DEFAULT 1
    CHECK (format IN (1, 2));
