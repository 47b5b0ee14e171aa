-- Signed redactions of sealed audit entries that an erasure pseudonymised. The chain keeps
-- each entry's original hash; the record says which hash came after which and what the
-- entry's content is now, under a signature only the platform's key can make, so
-- verification accepts exactly these edits and nothing else.
CREATE TABLE audit_redactions (
    seq       bigint PRIMARY KEY,
    entry_id  uuid NOT NULL,
    prev      bytea NOT NULL,
    hash      bytea NOT NULL,
    content   bytea NOT NULL,
    signature bytea NOT NULL,
    reason    text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);

-- When a user was erased (their personal data replaced by a pseudonym everywhere), and the
-- SHA-256 of the identity provider's subject they had: a token issued before the erasure
-- cannot bring the row back on its next request.
ALTER TABLE users ADD COLUMN erased_at timestamptz, ADD COLUMN erased_subject bytea;
CREATE INDEX users_erased_subject ON users (erased_subject) WHERE erased_subject IS NOT NULL;

-- Avatars: the original's digest and the resized variants (WebP), served with an ETag.
CREATE TABLE user_avatars (
    user_id    uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    etag       text NOT NULL,
    small      bytea NOT NULL,
    large      bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
