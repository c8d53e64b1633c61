-- Access requests: an agent without a grant asks for one with a purpose; a
-- tenant admin approves (creating a time-boxed grant that names the
-- request) or denies it; a request nobody answers expires. Rows are never
-- deleted. `same_key` is what makes two pending requests of one requester
-- the same request (capability, environments, selector, end user); the
-- filing transaction holds the tenant's chain head, so two replicas cannot
-- both file the same one.
CREATE TABLE access_requests (
    tenant_id       UUID NOT NULL REFERENCES tenants (id),
    id              UUID NOT NULL,
    requester_id    UUID NOT NULL,
    requester_name  TEXT NOT NULL,
    selector        TEXT NOT NULL,
    environments    TEXT NOT NULL,
    capability      TEXT NOT NULL,
    destinations    TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    on_behalf_of    TEXT,
    duration_secs   BIGINT NOT NULL,
    status          TEXT NOT NULL
        CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    same_key        TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    decided_at      BIGINT,
    decided_by      UUID,
    decision_reason TEXT NOT NULL,
    grant_id        UUID,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX access_requests_requester ON access_requests (tenant_id, requester_id, id);
CREATE INDEX access_requests_pending ON access_requests (tenant_id, requester_id, same_key)
    WHERE status = 'pending';
CREATE INDEX access_requests_due ON access_requests (expires_at) WHERE status = 'pending';

ALTER TABLE access_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE access_requests FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON access_requests
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
-- The sweeper finds the tenants with requests that ran out as it finds
-- those with leases that did (migration 20261207002001): a transaction
-- that sets `strongroom.lease_sweep` may read (never write) every
-- tenant's requests; it writes each tenant's bound to that tenant.
CREATE POLICY access_request_sweep_read ON access_requests FOR SELECT
    USING (current_setting('strongroom.lease_sweep', true) = 'on');

GRANT SELECT, INSERT, UPDATE ON access_requests TO strongroom_app;

-- The grant an approval created names its request.
ALTER TABLE grants ADD COLUMN access_request_id UUID;
