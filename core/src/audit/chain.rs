//! The chain itself, as pure functions: the canonical bytes of an entry, the hash that links
//! it to its predecessor, the per-tenant checkpoint signatures, and a streaming verifier that
//! reports the first broken link. No I/O here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The hash before the first entry (and after nothing was ever written).
pub const GENESIS: [u8; 32] = [0; 32];

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = crate::schema::tenant::audit_log)]
pub struct Entry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub data: serde_json::Value,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub seq: Option<i64>,
    pub hash: Option<Vec<u8>>,
}

fn put(h: &mut Sha256, field: Option<&str>) {
    match field {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
    }
}

/// `sha256(previous hash ‖ seq ‖ every field, length-prefixed)`. The JSON data is hashed in
/// serde_json's canonical form (sorted keys), so a re-encoding by the database cannot change it.
pub fn link(prev: &[u8; 32], seq: i64, e: &Entry) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"neotenant-audit-v1");
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(e.id.as_bytes());
    h.update(e.at.timestamp_micros().to_be_bytes());
    put(&mut h, Some(&e.actor_type));
    put(&mut h, e.actor_id.as_deref());
    put(&mut h, Some(&e.action));
    put(&mut h, Some(&e.target_type));
    put(&mut h, e.target_id.as_deref());
    put(&mut h, Some(&e.data.to_string()));
    put(&mut h, e.request_id.as_deref());
    put(&mut h, e.ip.as_deref());
    put(&mut h, e.user_agent.as_deref());
    h.finalize().into()
}

/// Signs checkpoints with a key per tenant derived from the platform's master key, which no
/// tenant database holds.
#[derive(Clone)]
pub struct Signer {
    master: Vec<u8>,
}

impl Signer {
    pub fn new(master: &str) -> Self {
        Signer {
            master: master.as_bytes().to_vec(),
        }
    }

    fn tenant_mac(&self, tenant: Uuid) -> HmacSha256 {
        let mut derive = HmacSha256::new_from_slice(&self.master).expect("any key length");
        derive.update(b"neotenant-audit-tenant-key");
        derive.update(tenant.as_bytes());
        let key = derive.finalize().into_bytes();
        HmacSha256::new_from_slice(&key).expect("any key length")
    }

    fn message(mac: &mut HmacSha256, kind: &[u8], tenant: Uuid, seq: i64, hash: &[u8]) {
        mac.update(kind);
        mac.update(tenant.as_bytes());
        mac.update(&seq.to_be_bytes());
        mac.update(hash);
    }

    /// The signature of "the chain of `tenant` has `hash` at `seq`" (`kind`: checkpoint or
    /// anchor).
    pub fn sign(&self, kind: &[u8], tenant: Uuid, seq: i64, hash: &[u8]) -> Vec<u8> {
        let mut mac = self.tenant_mac(tenant);
        Self::message(&mut mac, kind, tenant, seq, hash);
        mac.finalize().into_bytes().to_vec()
    }

    /// Constant-time check of a signature.
    pub fn verify(&self, kind: &[u8], tenant: Uuid, seq: i64, hash: &[u8], sig: &[u8]) -> bool {
        let mut mac = self.tenant_mac(tenant);
        Self::message(&mut mac, kind, tenant, seq, hash);
        mac.verify_slice(sig).is_ok()
    }
}

pub const CHECKPOINT: &[u8] = b"checkpoint";
pub const ANCHOR: &[u8] = b"anchor";
pub const REDACTION: &[u8] = b"redaction";

/// A signed redaction of a sealed entry (an erasure pseudonymised it): the chain keeps the
/// entry's original hash `hash`, reached from `prev`, and the entry's present content has the
/// digest `content`. Only the platform's key can sign one, so a redaction cannot be forged
/// into the tenant database, and the redacted content cannot be edited afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Redaction {
    pub prev: Vec<u8>,
    pub hash: Vec<u8>,
    pub content: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Redactions by seq.
pub type Redactions = BTreeMap<i64, Redaction>;

/// The digest of an entry's content at `seq`, independent of its predecessor.
pub fn content_digest(seq: i64, e: &Entry) -> [u8; 32] {
    link(&GENESIS, seq, e)
}

/// What a redaction's signature covers: `sha256(prev ‖ hash ‖ content)`.
pub fn redaction_message(prev: &[u8], hash: &[u8], content: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"neotenant-audit-redaction-v1");
    h.update(prev);
    h.update(hash);
    h.update(content);
    h.finalize().into()
}

impl Redaction {
    /// Signs the redaction of the entry at `seq` (now `redacted`) whose chain hash is `hash`
    /// after `prev`.
    pub fn sign(
        signer: &Signer,
        tenant: Uuid,
        seq: i64,
        prev: &[u8],
        hash: &[u8],
        redacted: &Entry,
    ) -> Self {
        let content = content_digest(seq, redacted).to_vec();
        let signature = signer.sign(
            REDACTION,
            tenant,
            seq,
            &redaction_message(prev, hash, &content),
        );
        Redaction {
            prev: prev.to_vec(),
            hash: hash.to_vec(),
            content,
            signature,
        }
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Serialize, salvo::oapi::ToSchema)]
pub struct Broken {
    /// The position in the chain where it breaks.
    pub seq: i64,
    /// The entry there, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<String>,
    pub reason: String,
}

/// Signed checkpoints by seq: (hash, signature).
pub type Checkpoints = BTreeMap<i64, (Vec<u8>, Vec<u8>)>;

/// Checks a chain fed in `seq` order, against signed checkpoints.
pub struct Verifier {
    tenant: Uuid,
    signer: Signer,
    expected: i64,
    prev: [u8; 32],
    checkpoints: Checkpoints,
    redactions: Redactions,
    /// The platform's record of the head: (seq, hash, signature).
    head: Option<(i64, Vec<u8>, Vec<u8>)>,
    pub checked: u64,
    /// Entries accepted through a signed redaction.
    pub redacted: u64,
    pub checkpoints_checked: u64,
    pub broken: Option<Broken>,
}

impl Verifier {
    /// Starts after `anchor` (`(seq, hash)` of a pruned prefix, already verified), or at the
    /// beginning.
    pub fn new(
        tenant: Uuid,
        signer: Signer,
        anchor: Option<(i64, [u8; 32])>,
        checkpoints: Checkpoints,
    ) -> Self {
        let (seq, prev) = anchor.unwrap_or((0, GENESIS));
        Verifier {
            tenant,
            signer,
            expected: seq + 1,
            prev,
            checkpoints,
            redactions: Redactions::new(),
            head: None,
            checked: 0,
            redacted: 0,
            checkpoints_checked: 0,
            broken: None,
        }
    }

    /// Also checks the platform's record of the head (kept outside the tenant database): the
    /// chain must reach it, with the same hash there.
    pub fn with_head(mut self, head: Option<(i64, Vec<u8>, Vec<u8>)>) -> Self {
        self.head = head;
        self
    }

    /// Also accepts entries pseudonymised by an erasure, each through its signed redaction.
    pub fn with_redactions(mut self, redactions: Redactions) -> Self {
        self.redactions = redactions;
        self
    }

    /// Whether `e` at `seq` is a validly redacted entry whose original hash followed `prev`;
    /// returns that original hash.
    fn redacted_hash(&self, seq: i64, e: &Entry) -> Option<[u8; 32]> {
        let r = self.redactions.get(&seq)?;
        let hash: [u8; 32] = r.hash.as_slice().try_into().ok()?;
        let ok = r.prev.as_slice() == self.prev
            && e.hash.as_deref() == Some(&hash[..])
            && r.content.as_slice() == content_digest(seq, e)
            && self.signer.verify(
                REDACTION,
                self.tenant,
                seq,
                &redaction_message(&r.prev, &r.hash, &r.content),
                &r.signature,
            );
        ok.then_some(hash)
    }

    fn fail(&mut self, seq: i64, entry: Option<Uuid>, reason: impl Into<String>) {
        if self.broken.is_none() {
            self.broken = Some(Broken {
                seq,
                entry_id: entry.map(|id| id.to_string()),
                reason: reason.into(),
            });
        }
    }

    /// Feeds the next sealed entry; returns false once the chain is broken.
    pub fn feed(&mut self, e: &Entry) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let seq = e.seq.unwrap_or(-1);
        if seq != self.expected {
            let reason = if seq > self.expected {
                format!(
                    "entries {}..{} are missing (deleted) or out of order",
                    self.expected,
                    seq - 1
                )
            } else {
                "entry out of order".to_string()
            };
            self.fail(self.expected, Some(e.id), reason);
            return false;
        }
        let mut computed = link(&self.prev, seq, e);
        if e.hash.as_deref() != Some(&computed[..])
            && let Some(original) = self.redacted_hash(seq, e)
        {
            computed = original;
            self.redacted += 1;
        }
        if e.hash.as_deref() != Some(&computed[..]) {
            self.fail(
                seq,
                Some(e.id),
                "the entry does not match its hash: it was altered, inserted or moved",
            );
            return false;
        }
        if let Some((hash, sig)) = self.checkpoints.get(&seq) {
            if hash.as_slice() != computed
                || !self.signer.verify(CHECKPOINT, self.tenant, seq, hash, sig)
            {
                self.fail(
                    seq,
                    Some(e.id),
                    "the signed checkpoint here does not match the chain",
                );
                return false;
            }
            self.checkpoints_checked += 1;
        }
        if let Some((hseq, hash, _)) = &self.head
            && *hseq == seq
            && hash.as_slice() != computed
        {
            self.fail(
                seq,
                Some(e.id),
                "the chain differs from the platform's record of it here: entries were removed and replaced",
            );
            return false;
        }
        self.prev = computed;
        self.expected += 1;
        self.checked += 1;
        true
    }

    /// The last sequence number verified.
    pub fn last_seq(&self) -> i64 {
        self.expected - 1
    }

    pub fn last_hash(&self) -> [u8; 32] {
        self.prev
    }

    /// After the last entry: every checkpoint must have been reached, the last entry must be
    /// covered by one, and the platform's record of the head (kept outside the tenant
    /// database) must not lie beyond the end.
    pub fn finish(&mut self) {
        if self.broken.is_some() {
            return;
        }
        let head = self.head.clone();
        let last = self.last_seq();
        if let Some((&seq, _)) = self.checkpoints.range(last + 1..).next() {
            self.fail(
                last + 1,
                None,
                format!("entries up to the signed checkpoint at {seq} are missing (truncated)"),
            );
            return;
        }
        let covered = self
            .checkpoints
            .range(..=last)
            .next_back()
            .map_or(0, |(s, _)| *s);
        if last > covered {
            self.fail(
                covered + 1,
                None,
                format!(
                    "entries {}..{last} are not covered by any signed checkpoint",
                    covered + 1
                ),
            );
            return;
        }
        if let Some((seq, hash, sig)) = head {
            if !self
                .signer
                .verify(CHECKPOINT, self.tenant, seq, &hash, &sig)
            {
                self.fail(
                    seq,
                    None,
                    "the platform's record of the chain head is not signed",
                );
            } else if seq > last {
                self.fail(
                    last + 1,
                    None,
                    format!("the chain ends at {last} but reached {seq}: entries were removed"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64) -> Entry {
        Entry {
            id: Uuid::now_v7(),
            at: Utc::now(),
            actor_type: "user".into(),
            actor_id: Some(format!("usr_{n}")),
            action: "role.created".into(),
            target_type: "role".into(),
            target_id: None,
            data: serde_json::json!({"b": 1, "a": [n]}),
            request_id: None,
            ip: Some("10.0.0.1".into()),
            user_agent: None,
            seq: None,
            hash: None,
        }
    }

    /// A sealed chain of `n` entries with a checkpoint at each of `at`.
    fn chain(n: i64, at: &[i64], signer: &Signer, tenant: Uuid) -> (Vec<Entry>, Checkpoints) {
        let mut prev = GENESIS;
        let mut out = Vec::new();
        let mut cps = BTreeMap::new();
        for seq in 1..=n {
            let mut e = entry(seq);
            let h = link(&prev, seq, &e);
            e.seq = Some(seq);
            e.hash = Some(h.to_vec());
            if at.contains(&seq) {
                cps.insert(seq, (h.to_vec(), signer.sign(CHECKPOINT, tenant, seq, &h)));
            }
            prev = h;
            out.push(e);
        }
        (out, cps)
    }

    fn run(
        entries: &[Entry],
        cps: BTreeMap<i64, (Vec<u8>, Vec<u8>)>,
        signer: &Signer,
        tenant: Uuid,
    ) -> Option<Broken> {
        let mut v = Verifier::new(tenant, signer.clone(), None, cps);
        for e in entries {
            if !v.feed(e) {
                break;
            }
        }
        v.finish();
        v.broken
    }

    #[test]
    fn intact_chains_verify_and_every_tampering_is_found() {
        let signer = Signer::new("a-master-key-of-at-least-32-characters");
        let tenant = Uuid::now_v7();
        let (entries, cps) = chain(10, &[5, 10], &signer, tenant);
        assert_eq!(run(&entries, cps.clone(), &signer, tenant), None);

        let mut edited = entries.clone();
        edited[3].data = serde_json::json!({"b": 2});
        assert_eq!(run(&edited, cps.clone(), &signer, tenant).unwrap().seq, 4);

        let mut deleted = entries.clone();
        deleted.remove(6);
        assert_eq!(run(&deleted, cps.clone(), &signer, tenant).unwrap().seq, 7);

        let mut reordered = entries.clone();
        reordered.swap(1, 2);
        assert_eq!(
            run(&reordered, cps.clone(), &signer, tenant).unwrap().seq,
            2
        );

        let mut truncated = entries.clone();
        truncated.truncate(8);
        assert_eq!(
            run(&truncated, cps.clone(), &signer, tenant).unwrap().seq,
            9
        );

        // An appended entry with a correctly computed hash: no signed checkpoint covers it.
        let mut appended = entries.clone();
        let mut fake = entry(11);
        let h = link(
            entries[9].hash.as_deref().unwrap().try_into().unwrap(),
            11,
            &fake,
        );
        fake.seq = Some(11);
        fake.hash = Some(h.to_vec());
        appended.push(fake);
        assert_eq!(
            run(&appended, cps.clone(), &signer, tenant).unwrap().seq,
            11
        );

        // A rewritten chain (every hash recomputed) fails at the first signed checkpoint.
        let (mut forged, _) = chain(10, &[], &signer, tenant);
        forged[0].action = "nothing.happened".into();
        let mut prev = GENESIS;
        for e in forged.iter_mut() {
            let h = link(&prev, e.seq.unwrap(), e);
            e.hash = Some(h.to_vec());
            prev = h;
        }
        assert_eq!(run(&forged, cps.clone(), &signer, tenant).unwrap().seq, 5);

        // Another key, or another tenant's signatures, do not verify.
        let other = Signer::new("another-master-key-of-32-characters!!");
        assert_eq!(run(&entries, cps.clone(), &other, tenant).unwrap().seq, 5);
        assert_eq!(run(&entries, cps, &signer, Uuid::now_v7()).unwrap().seq, 5);
    }

    #[test]
    fn a_signed_redaction_keeps_the_chain_verifying_and_nothing_else_does() {
        let signer = Signer::new("a-master-key-of-at-least-32-characters");
        let tenant = Uuid::now_v7();
        let (entries, cps) = chain(6, &[6], &signer, tenant);
        let mut redacted = entries.clone();
        redacted[2].ip = None;
        redacted[2].data = serde_json::json!({"email": "erased:usr_3"});
        let prev = entries[1].hash.clone().unwrap();
        let hash = entries[2].hash.clone().unwrap();
        let r = Redaction::sign(&signer, tenant, 3, &prev, &hash, &redacted[2]);
        let verify = |entries: &[Entry], reds: Redactions, signer: &Signer| {
            let mut v =
                Verifier::new(tenant, signer.clone(), None, cps.clone()).with_redactions(reds);
            for e in entries {
                if !v.feed(e) {
                    break;
                }
            }
            v.finish();
            (v.broken, v.redacted)
        };
        let one = |r: Redaction| Redactions::from([(3, r)]);
        assert_eq!(verify(&redacted, one(r.clone()), &signer), (None, 1));
        // Without the record, or with the redacted entry edited again, the chain breaks there.
        assert_eq!(
            verify(&redacted, Redactions::new(), &signer).0.unwrap().seq,
            3
        );
        let mut edited = redacted.clone();
        edited[2].data = serde_json::json!({"email": "someone-else@example.com"});
        assert_eq!(verify(&edited, one(r.clone()), &signer).0.unwrap().seq, 3);
        // A record signed with another key, or moved to another position, is refused.
        let other = Signer::new("another-master-key-of-32-characters!!");
        let forged = Redaction::sign(&other, tenant, 3, &prev, &hash, &redacted[2]);
        assert_eq!(verify(&redacted, one(forged), &signer).0.unwrap().seq, 3);
        let mut moved = redacted.clone();
        moved[3].data = serde_json::json!({});
        let wrong_place = Redactions::from([(4, r.clone())]);
        assert_eq!(verify(&moved, wrong_place, &signer).0.unwrap().seq, 3);
    }

    #[test]
    fn the_platform_head_catches_truncation_of_entries_and_checkpoints_together() {
        let signer = Signer::new("a-master-key-of-at-least-32-characters");
        let tenant = Uuid::now_v7();
        let (entries, cps) = chain(10, &[5, 10], &signer, tenant);
        let head = cps.get(&10).map(|(h, s)| (10, h.clone(), s.clone()));
        let mut cut_cps = cps.clone();
        cut_cps.remove(&10);
        let mut v = Verifier::new(tenant, signer.clone(), None, cut_cps).with_head(head.clone());
        for e in &entries[..5] {
            assert!(v.feed(e));
        }
        v.finish();
        assert_eq!(v.broken.unwrap().seq, 6);
        // Cut, then refilled with new entries up to the same length: the head's hash differs.
        let (other, other_cps) = chain(10, &[5, 10], &signer, tenant);
        let mut refilled = entries[..5].to_vec();
        let mut prev: [u8; 32] = entries[4].hash.as_deref().unwrap().try_into().unwrap();
        let mut cps: Checkpoints = cps.range(..=5).map(|(k, v)| (*k, v.clone())).collect();
        for e in &other[5..] {
            let mut e = e.clone();
            let h = link(&prev, e.seq.unwrap(), &e);
            e.hash = Some(h.to_vec());
            prev = h;
            refilled.push(e);
        }
        cps.insert(
            10,
            (prev.to_vec(), signer.sign(CHECKPOINT, tenant, 10, &prev)),
        );
        drop(other_cps);
        let mut v = Verifier::new(tenant, signer.clone(), None, cps).with_head(head);
        for e in &refilled {
            if !v.feed(e) {
                break;
            }
        }
        v.finish();
        assert_eq!(v.broken.unwrap().seq, 10);
    }
}
