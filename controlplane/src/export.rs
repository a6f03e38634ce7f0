//! Exports: which subtree a client may reach, read-only or not, and how its
//! credentials map (root squash).

use crate::config::{parse_client_pattern, ExportConfig};
use pnfs_protocol::rpc::Credential;
use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct Export {
    /// 1-based; 0 is the read-only pseudo root.
    pub id: u16,
    pub path: String,
    pub root_ino: u64,
    pub read_only: bool,
    clients: Vec<(IpAddr, u8)>,
    pub root_squash: bool,
    pub anon: (u32, u32),
}

/// The caller after squashing: what permission checks use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
}

impl Caller {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.gids.contains(&gid)
    }
}

fn matches(net: &(IpAddr, u8), ip: &IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(*ip),
        _ => *ip,
    };
    match (net.0, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if net.1 == 0 { 0 } else { u32::MAX << (32 - net.1) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if net.1 == 0 { 0 } else { u128::MAX << (128 - net.1) };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

impl Export {
    pub fn new(id: u16, cfg: &ExportConfig, root_ino: u64) -> Export {
        Export {
            id,
            path: cfg.path.clone(),
            root_ino,
            read_only: cfg.read_only,
            clients: cfg.clients.iter().filter_map(|c| parse_client_pattern(c).ok()).collect(),
            root_squash: cfg.root_squash,
            anon: (cfg.anon_uid, cfg.anon_gid),
        }
    }

    /// The pseudo root: browsable by anyone, never writable.
    pub fn pseudo(root_ino: u64) -> Export {
        Export {
            id: 0,
            path: "/".into(),
            root_ino,
            read_only: true,
            clients: vec![],
            root_squash: false,
            anon: (65534, 65534),
        }
    }

    pub fn allows(&self, peer: &IpAddr) -> bool {
        self.clients.is_empty() || self.clients.iter().any(|n| matches(n, peer))
    }

    pub fn caller(&self, cred: &Credential) -> Caller {
        let (uid, gid, gids) = match cred {
            Credential::Sys { uid, gid, gids, .. } => (*uid, *gid, gids.clone()),
            _ => (self.anon.0, self.anon.1, vec![]),
        };
        if uid == 0 && self.root_squash {
            return Caller { uid: self.anon.0, gid: self.anon.1, gids: vec![] };
        }
        Caller { uid, gid, gids }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_and_squash() {
        let cfg = ExportConfig {
            path: "/e".into(),
            read_only: false,
            clients: vec!["10.0.2.0/24".into(), "127.0.0.1".into()],
            root_squash: true,
            anon_uid: 99,
            anon_gid: 98,
            stripe_count: None,
            stripe_unit: None,
        };
        let e = Export::new(1, &cfg, 5);
        assert!(e.allows(&"10.0.2.15".parse().unwrap()));
        assert!(e.allows(&"::ffff:127.0.0.1".parse().unwrap()));
        assert!(!e.allows(&"10.0.3.1".parse().unwrap()));
        let root = Credential::Sys { uid: 0, gid: 0, gids: vec![], machine: vec![] };
        assert_eq!(e.caller(&root).uid, 99);
        let user = Credential::Sys { uid: 5, gid: 6, gids: vec![7], machine: vec![] };
        assert!(e.caller(&user).in_group(7));
        assert!(parse_client_pattern("10.0.0.0/33").is_err());
    }
}
