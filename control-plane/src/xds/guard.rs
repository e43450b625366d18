//! A control plane never takes a node backwards by accident.
//!
//! A node that reconnects says what it holds: a state-of-the-world client
//! the version it last accepted per type, a delta client its resources.
//! When that is newer than anything this control plane's store has (a
//! version above its newest, or any configuration while the store has
//! never had a version: a wrong database URL, an empty backup restored), the
//! node is held on what it has: nothing is pushed to it, its status shows
//! why, and an error is logged. The hold ends by itself when the store
//! catches up (another replica's write arrives, the right database is back),
//! or when an operator confirms that this store is the one to serve.
//!
//! Delta clients do not say which version they hold, only resource names
//! and content hashes: for them only the empty-store case is detected.

use super::stream::Variant;

/// What a reconnecting node says it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A state-of-the-world `version_info` from an earlier stream.
    Version(String),
    /// A delta client announced this many resources it holds.
    Resources(usize),
}

impl Claim {
    /// What one request says the node holds, if anything.
    pub fn from_request(variant: Variant, version_info: &str, announced: usize) -> Option<Claim> {
        match variant {
            Variant::StateOfTheWorld if !version_info.is_empty() => {
                Some(Claim::Version(version_info.to_owned()))
            }
            Variant::Delta if announced > 0 => Some(Claim::Resources(announced)),
            _ => None,
        }
    }

    /// The stronger of two claims (the higher version).
    pub fn max(self, other: Claim) -> Claim {
        match (&self, &other) {
            (Claim::Version(a), Claim::Version(b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(x), Ok(y)) if y > x => other,
                (Ok(_), Err(_)) => other,
                _ => self,
            },
            _ => self,
        }
    }
}

/// Why serving a node that holds `claim` from a store whose newest version
/// is `latest` would take it backwards; `None` when it would not.
pub fn mismatch(claim: &Claim, latest: u64) -> Option<String> {
    match claim {
        Claim::Version(held) => match held.parse::<u64>() {
            Ok(held) if held > latest => Some(format!(
                "the node holds version {held}, newer than this store's newest ({latest}): \
                 is this the right database?"
            )),
            Ok(_) => None,
            Err(_) => Some(format!(
                "the node holds version {held:?}, which this store never made"
            )),
        },
        Claim::Resources(count) if latest == 0 => Some(format!(
            "the node holds {count} resources and this store is empty: is this the right database?"
        )),
        Claim::Resources(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_ahead_of_the_store_is_held() {
        let v = |s: &str| Claim::Version(s.into());
        assert!(mismatch(&v("7"), 0).is_some(), "an empty store");
        assert!(mismatch(&v("7"), 5).is_some(), "an older backup");
        assert!(mismatch(&v("x"), 5).is_some(), "not a version of ours");
        assert_eq!(mismatch(&v("7"), 7), None);
        assert_eq!(mismatch(&v("3"), 7), None, "behind: it catches up");
        assert!(mismatch(&Claim::Resources(4), 0).is_some());
        assert_eq!(mismatch(&Claim::Resources(4), 1), None);
    }

    #[test]
    fn claims_come_from_reconnecting_requests() {
        use Variant::*;
        assert_eq!(
            Claim::from_request(StateOfTheWorld, "", 0),
            None,
            "a new node"
        );
        assert_eq!(
            Claim::from_request(StateOfTheWorld, "9", 0),
            Some(Claim::Version("9".into()))
        );
        assert_eq!(Claim::from_request(Delta, "", 0), None);
        assert_eq!(Claim::from_request(Delta, "", 3), Some(Claim::Resources(3)));
        let max = Claim::Version("9".into()).max(Claim::Version("12".into()));
        assert_eq!(max, Claim::Version("12".into()));
    }
}
