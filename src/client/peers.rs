//! Several rowgate instances behind one TCP load balancer (PgBouncer's
//! peering design): each instance puts its id into the cancel keys it
//! issues, and a CancelRequest that lands on another instance is forwarded,
//! unchanged, to the instance whose id the key carries. No state is shared
//! between instances; every instance only needs the same `[peers]` list.
//!
//! ```toml
//! [peers]
//! id = 1                          # this instance (ROWGATE_PEERS_ID=1)
//! [peers.addresses]
//! 1 = "10.0.0.11:6432"            # its own entry is ignored
//! 2 = "10.0.0.12:6432"
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest instance id: ids live in bits 16..30 of the issued pid, which
/// stays positive (some clients keep it in a signed 32-bit integer).
pub const MAX_PEER_ID: u16 = 16383;

/// How long forwarding one cancel request to a peer may take.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// `[peers]`: this instance's id and where the others listen.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersConfig {
    /// This instance's id (1 to 16383), unique among the instances.
    pub id: Option<u16>,
    /// Each instance's id and client address (`host:port`, as reachable
    /// from the other instances).
    #[serde(default)]
    pub addresses: BTreeMap<String, String>,
}

impl PeersConfig {
    /// Checks ids and addresses, with advice.
    pub fn validate(&self) -> Result<(), String> {
        self.peers().map(|_| ())
    }

    /// The validated form.
    pub fn peers(&self) -> Result<Peers, String> {
        let check_id = |id: u16, what: &str| {
            if id == 0 || id > MAX_PEER_ID {
                Err(format!(
                    "[peers] {what}: an instance id must be between 1 and {MAX_PEER_ID}"
                ))
            } else {
                Ok(id)
            }
        };
        let own = self.id.map(|id| check_id(id, "id")).transpose()?;
        let mut others = BTreeMap::new();
        for (key, addr) in &self.addresses {
            let id: u16 = key.parse().map_err(|_| {
                format!("[peers.addresses] {key:?}: the key must be an instance id (a number)")
            })?;
            check_id(id, &format!("addresses.{key}"))?;
            let port_ok = addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !port_ok {
                return Err(format!(
                    "[peers.addresses] {key} = {addr:?}: expected host:port, e.g. \"10.0.0.12:6432\""
                ));
            }
            if Some(id) != own {
                others.insert(id, addr.clone());
            }
        }
        if own.is_none() && !others.is_empty() {
            return Err("[peers] addresses are set but this instance's id is not: set [peers] id (or ROWGATE_PEERS_ID) to this instance's entry".into());
        }
        Ok(Peers { own, others })
    }
}

/// Who issued a cancel key, and where the other instances are.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    own: Option<u16>,
    others: BTreeMap<u16, String>,
}

impl Peers {
    /// This instance's id, when peering is on.
    pub fn own_id(&self) -> Option<u16> {
        self.own
    }

    /// A pid for a new client key: this instance's id in bits 16..30 and
    /// `random` below, when peering is on; else `random` as it is (in
    /// 1..i32::MAX).
    pub fn issue_pid(&self, random: i32) -> i32 {
        match self.own {
            Some(id) => (i32::from(id) << 16) | (random & 0xffff),
            None => random,
        }
    }

    /// The address of the peer that issued `pid`, when it is not this
    /// instance.
    pub fn owner_elsewhere(&self, pid: i32) -> Option<&str> {
        let own = self.own?;
        let id = u16::try_from(pid >> 16).ok()?;
        if id == own {
            return None;
        }
        self.others.get(&id).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(toml: &str) -> Result<Peers, String> {
        toml::from_str::<PeersConfig>(toml)
            .map_err(|e| e.to_string())?
            .peers()
    }

    #[test]
    fn keys_carry_the_issuing_instance() {
        let p = peers(
            "id = 2\n[addresses]\n1 = \"127.0.0.1:7001\"\n2 = \"127.0.0.1:7002\"\n3 = \"127.0.0.1:7003\"\n",
        )
        .unwrap();
        for random in [0, 1, 0xffff, i32::MAX, 0x1234_5678] {
            let pid = p.issue_pid(random);
            assert!(pid > 0);
            assert_eq!(pid >> 16, 2);
            assert_eq!(p.owner_elsewhere(pid), None);
        }
        let theirs = peers("id = 3\n[addresses]\n2 = \"127.0.0.1:7002\"\n")
            .unwrap()
            .issue_pid(77);
        assert_eq!(p.owner_elsewhere(theirs), Some("127.0.0.1:7003"));
        // An id nobody has: not forwarded anywhere.
        assert_eq!(p.owner_elsewhere(9 << 16), None);
        assert_eq!(p.owner_elsewhere(-5), None);
    }

    #[test]
    fn without_peering_pids_are_as_random_as_before() {
        let p = Peers::default();
        assert_eq!(p.issue_pid(123_456_789), 123_456_789);
        assert_eq!(p.owner_elsewhere(2 << 16), None);
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(peers("id = 0\n").unwrap_err().contains("between 1 and"));
        assert!(peers("id = 20000\n").unwrap_err().contains("between 1 and"));
        let e = peers("[addresses]\n2 = \"127.0.0.1:7002\"\n").unwrap_err();
        assert!(e.contains("id is not"), "{e}");
        let e = peers("id = 1\n[addresses]\nb = \"127.0.0.1:7002\"\n").unwrap_err();
        assert!(e.contains("instance id"), "{e}");
        let e = peers("id = 1\n[addresses]\n2 = \"127.0.0.1\"\n").unwrap_err();
        assert!(e.contains("host:port"), "{e}");
    }
}
