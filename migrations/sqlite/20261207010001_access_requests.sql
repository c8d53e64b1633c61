-- Access requests: an agent without a grant asks for one with a purpose; a
-- tenant admin approves (creating a time-boxed grant that names the
-- request) or denies it; a request nobody answers expires. Rows are never
-- deleted. `same_key` is what makes two pending requests of one requester
-- the same request (capability, environments, selector, end user).
CREATE TABLE access_requests (
    tenant_id       BLOB NOT NULL REFERENCES tenants (id),
    id              BLOB NOT NULL,
    requester_id    BLOB NOT NULL,
    requester_name  TEXT NOT NULL,
    selector        TEXT NOT NULL,
    environments    TEXT NOT NULL,
    capability      TEXT NOT NULL,
    destinations    TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    on_behalf_of    TEXT,
    duration_secs   INTEGER NOT NULL,
    status          TEXT NOT NULL
        CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    same_key        TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    decided_at      INTEGER,
    decided_by      BLOB,
    decision_reason TEXT NOT NULL,
    grant_id        BLOB,
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE INDEX access_requests_requester ON access_requests (tenant_id, requester_id, id);
CREATE INDEX access_requests_pending ON access_requests (tenant_id, requester_id, same_key)
    WHERE status = 'pending';
CREATE INDEX access_requests_due ON access_requests (expires_at) WHERE status = 'pending';

-- The grant an approval created names its request.
ALTER TABLE grants ADD COLUMN access_request_id BLOB;
