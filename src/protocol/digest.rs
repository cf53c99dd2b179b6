//! An order-independent summary of a set of (user, session) pairs, so a gateway and a
//! center can tell cheaply whether the directory's view of that gateway equals what it
//! holds (docs/ARCHITECTURE.md, Convergence).
//!
//! Each pair hashes to 64 bits (xxh3, the same on every machine and build); a set's digest
//! is the number of pairs and the wrapping sum of their hashes, so adding or removing one
//! pair is O(1) on either side. Pairs fall into [`BUCKETS`] buckets by user, so when two
//! digests differ the sides compare per-bucket digests and exchange only the buckets that
//! differ.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Buckets a gateway's sessions are split into for reconciliation: at 100,000 sessions
/// per gateway one bucket lists ~400 of them (~30 KB).
pub(crate) const BUCKETS: usize = 256;

/// The count and hash sum of a set of (user, session) pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// How many pairs.
    #[serde(rename = "n")]
    pub sessions: u64,
    /// The wrapping sum of the pairs' hashes, as 16 hex digits (JSON numbers lose bits).
    #[serde(rename = "h", with = "hex")]
    pub sum: u64,
}

impl Digest {
    pub(crate) fn add(&mut self, user: &str, session: &str) {
        self.sessions += 1;
        self.sum = self.sum.wrapping_add(pair_hash(user, session));
    }

    pub(crate) fn remove(&mut self, user: &str, session: &str) {
        self.sessions = self.sessions.saturating_sub(1);
        self.sum = self.sum.wrapping_sub(pair_hash(user, session));
    }

    /// The digest of some pairs.
    #[cfg(test)]
    pub(crate) fn of<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut digest = Digest::default();
        for (user, session) in pairs {
            digest.add(user, session);
        }
        digest
    }
}

/// Per-bucket digests of one gateway's sessions.
pub(crate) type Buckets = Vec<Digest>;

/// Empty digests, one per bucket.
pub(crate) fn empty_buckets() -> Buckets {
    vec![Digest::default(); BUCKETS]
}

/// The bucket a user's sessions fall into.
pub(crate) fn bucket_of(user: &str) -> usize {
    (xxh3_64(user.as_bytes()) % BUCKETS as u64) as usize
}

/// The hash of one pair; the separator keeps ("ab","c") and ("a","bc") apart.
fn pair_hash(user: &str, session: &str) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(user.as_bytes());
    hasher.update(&[0]);
    hasher.update(session.as_bytes());
    hasher.digest()
}

mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{value:016x}"))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = <&str>::deserialize(d)?;
        u64::from_str_radix(text, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_hash_is_the_same_on_every_build() {
        // Gateways and centers of different builds must agree: pin one value.
        let d = Digest::of([("alice", "s1")]);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            format!(r#"{{"n":1,"h":"{:016x}"}}"#, d.sum)
        );
        assert_eq!(d.sum, pair_hash("alice", "s1"));
        assert_ne!(pair_hash("ab", "c"), pair_hash("a", "bc"));
        let back: Digest = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>(r#"{"n":1,"h":"xyz"}"#).is_err());
    }

    proptest! {
        #[test]
        fn order_does_not_matter_and_removal_undoes_addition(
            pairs in proptest::collection::vec(("[a-z]{1,4}", "[a-z0-9]{1,6}"), 0..20),
            extra in ("[a-z]{1,4}", "[a-z0-9]{1,6}"),
        ) {
            let forward = Digest::of(pairs.iter().map(|(u, s)| (u.as_str(), s.as_str())));
            let backward = Digest::of(pairs.iter().rev().map(|(u, s)| (u.as_str(), s.as_str())));
            prop_assert_eq!(forward, backward);
            let mut changed = forward;
            changed.add(&extra.0, &extra.1);
            prop_assert_ne!(changed, forward);
            changed.remove(&extra.0, &extra.1);
            prop_assert_eq!(changed, forward);
            prop_assert!(bucket_of(&extra.0) < BUCKETS);
        }
    }
}
