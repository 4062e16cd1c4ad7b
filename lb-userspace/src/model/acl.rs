//! Who may open flows to a listener (NLB's security groups): the
//! listener's `allow` list (empty: everyone) and the gateway's `deny` list,
//! which wins. The XDP program asks an LPM trie built from `entries`; the
//! proxy asks `permits`. Both decide alike.

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;
use lb_common::{AclData, ACL_GATEWAY, ACL_SCOPE_BITS};

use super::{addr_words, Model};

/// Whether `client` may open a flow under `allow` and `deny`.
pub fn permits(allow: &[IpNet], deny: &[IpNet], client: IpAddr) -> bool {
    let client = canonical(client);
    !deny.iter().any(|n| n.contains(&client))
        && (allow.is_empty() || allow.iter().any(|n| n.contains(&client)))
}

/// A v4-mapped v6 client (a dual-stack socket's peer) as the v4 address.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

/// The `ACL` trie's entries: (prefix length, key data).
pub fn entries(m: &Model) -> BTreeSet<(u32, AclData)> {
    let key = |scope: u32, n: &IpNet| {
        let n = n.trunc();
        let (addr, family) = addr_words(n.addr());
        (
            ACL_SCOPE_BITS + n.prefix_len() as u32,
            AclData::of(scope, family, &addr),
        )
    };
    let mut out: BTreeSet<_> = m.deny.iter().map(|n| key(ACL_GATEWAY, n)).collect();
    for v in &m.vips {
        out.extend(v.allow.iter().map(|n| key(v.vip_id, n)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn deny_wins_and_empty_allows_all() {
        let allow = nets(&["203.0.113.0/24", "2001:db8::/32"]);
        let deny = nets(&["203.0.113.66/32"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(permits(&allow, &deny, ip("203.0.113.7")));
        assert!(
            permits(&allow, &deny, ip("::ffff:203.0.113.7")),
            "v4-mapped"
        );
        assert!(!permits(&allow, &deny, ip("203.0.113.66")), "denied");
        assert!(!permits(&allow, &deny, ip("198.51.100.1")), "not allowed");
        assert!(permits(&allow, &deny, ip("2001:db8:1::5")));
        assert!(permits(&[], &[], ip("198.51.100.1")), "no lists: everyone");
        assert!(!permits(&[], &deny, ip("203.0.113.66")));
    }
}
