-- Leases: each reveal (and resolve) opens one, stored in the same commit as
-- the reveal's audit event. The holder renews it up to max_expires_at or
-- releases it; the server's sweeper expires it when it runs out; revoking
-- its credential, grant or principal ends it. Rows are never deleted (the
-- history of who used what and for how long); ended leases keep when and
-- why they ended.
CREATE TABLE leases (
    tenant_id       BLOB NOT NULL REFERENCES tenants (id),
    id              BLOB NOT NULL,
    credential_id   BLOB NOT NULL,
    credential_name TEXT NOT NULL,
    environment     TEXT NOT NULL,
    version         INTEGER NOT NULL,
    principal_id    BLOB NOT NULL,
    grant_id        BLOB,
    on_behalf_of    TEXT,
    purpose         TEXT,
    ttl_secs        INTEGER NOT NULL,
    issued_at       INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    max_expires_at  INTEGER NOT NULL,
    state           TEXT NOT NULL
        CHECK (state IN ('active', 'released', 'expired', 'revoked')),
    ended_at        INTEGER,
    end_reason      TEXT,
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE INDEX leases_credential ON leases (tenant_id, credential_id, id);
CREATE INDEX leases_principal ON leases (tenant_id, principal_id, id);
CREATE INDEX leases_grant ON leases (tenant_id, grant_id) WHERE state = 'active';
CREATE INDEX leases_due ON leases (expires_at) WHERE state = 'active';
