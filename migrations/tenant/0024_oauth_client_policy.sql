-- An OAuth client's own policy, as an API key's (0022): its pinned API version, its rate limit
-- (its own bucket; NULL: the tenant's per-user rate), and an optional quota of credits with a
-- periodic refill whose live count is kept in Redis and snapshotted in `quota_left` /
-- `quota_period`.
ALTER TABLE oauth_clients
    ADD COLUMN api_version         text,
    ADD COLUMN rate_per_sec        double precision CHECK (rate_per_sec > 0 AND rate_per_sec <= 100000),
    ADD COLUMN rate_burst          integer CHECK (rate_burst BETWEEN 1 AND 1000000),
    ADD COLUMN quota_credits       bigint CHECK (quota_credits >= 0),
    ADD COLUMN quota_refill_amount bigint CHECK (quota_refill_amount >= 1),
    ADD COLUMN quota_refill_secs   integer CHECK (quota_refill_secs >= 60),
    ADD COLUMN quota_left          bigint,
    ADD COLUMN quota_period        bigint;
