//! Virtual IPs: which node should claim which VIP (a pure function, so two
//! survivors compute the same answer and do not fight; the claim txn in
//! etcd decides any race), and putting an address on the interface.
//!
//! Claims are etcd keys `P<vip octets>` under the claiming node's lease, so
//! a node's claims vanish with its lease. No failback: a VIP held by a live
//! node stays there when its preferred node comes back (moving it would
//! cut that node's clients off mid-connection).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Firewall mark on the MDS NFS listener's sockets (RST suppression, see
/// [`IpActuator::setup`]).
pub const NFS_SOCKET_MARK: u32 = 0x5046;

/// KV key prefix of VIP claims.
pub const VIP_CLAIM_PREFIX: &[u8] = &[crate::keyspace::VIP_CLAIM];

/// Key of the claim on `vip`: `P` then its octets.
pub fn vip_key(vip: IpAddr) -> Vec<u8> {
    let mut k = VIP_CLAIM_PREFIX.to_vec();
    match vip {
        IpAddr::V4(a) => k.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => k.extend_from_slice(&a.octets()),
    }
    k
}

/// The VIP a claim key names.
pub fn vip_of_key(key: &[u8]) -> Option<IpAddr> {
    let rest = key.strip_prefix(VIP_CLAIM_PREFIX)?;
    match rest.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(rest).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(rest).ok()?)),
        _ => None,
    }
}

/// Value of a claim: the holder's node id and control epoch, as text
/// (readable with etcdctl).
pub fn claim_value(node_id: u32, epoch: u64) -> Vec<u8> {
    format!("{node_id} {epoch}").into_bytes()
}

/// Holder node id of a claim value.
pub fn claim_holder(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value).ok()?.split(' ').next()?.parse().ok()
}

/// The VIPs node `me` should try to claim now. VIP i (0-based) is preferred
/// on node i + 1: it claims it whenever it is free. A free VIP whose
/// preferred node is not live goes to the live node holding the fewest
/// VIPs (counting the ones handed out in this pass, in VIP order), ties to
/// the lowest node id; `may_take(node)` says whether a dead node's VIPs
/// may be taken yet (it has been fenced, or it was never seen and the
/// start-up wait is over). `live` must include `me`.
pub fn vips_to_claim(
    me: u32,
    vips: &[IpAddr],
    live: &BTreeSet<u32>,
    claims: &BTreeMap<IpAddr, u32>,
    may_take: impl Fn(u32) -> bool,
) -> Vec<IpAddr> {
    let mut load: BTreeMap<u32, usize> = live.iter().map(|&n| (n, 0)).collect();
    for holder in claims.values() {
        if let Some(l) = load.get_mut(holder) {
            *l += 1;
        }
    }
    let mut mine = Vec::new();
    for (i, &vip) in vips.iter().enumerate() {
        if claims.contains_key(&vip) {
            continue;
        }
        let preferred = i as u32 + 1;
        let taker = if live.contains(&preferred) {
            preferred
        } else if may_take(preferred) {
            match load.iter().min_by_key(|&(&n, &l)| (l, n)) {
                Some((&n, _)) => n,
                None => continue,
            }
        } else {
            continue;
        };
        *load.entry(taker).or_default() += 1;
        if taker == me {
            mine.push(vip);
        }
    }
    mine
}

/// Puts VIPs on and off this host. `ip` in production
/// ([`IpActuator`]), a recorder in tests ([`RecordingActuator`]).
pub trait VipActuator: Send + Sync {
    /// Once at start: RST suppression rules for every VIP, and removal of
    /// configured VIPs left on the interface by a previous instance.
    fn setup(&self, vips: &[IpAddr]) -> Result<(), String>;
    /// Adds `vip` and announces it (gratuitous ARP).
    fn add(&self, vip: IpAddr) -> Result<(), String>;
    /// Removes `vip` (absent is fine).
    fn remove(&self, vip: IpAddr) -> Result<(), String>;
}

/// `ip addr` / `ip rule` (iproute2) on one interface; needs root
/// (CAP_NET_ADMIN, CAP_NET_RAW for the ARP).
pub struct IpActuator {
    pub interface: String,
    pub prefix_len: u8,
    /// The NFS listener's port (the RST rules match it).
    pub nfs_port: u16,
}

fn run_ip(args: &[String]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running `ip {}`: {e} (VIP management needs iproute2's ip)", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`ip {}`: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn family(vip: IpAddr) -> &'static str {
    if vip.is_ipv4() { "-4" } else { "-6" }
}

impl IpActuator {
    /// The two RST-suppression rules of `vip`: replies from the VIP's NFS
    /// port leave only from marked sockets (pnfsd's); anything else, above
    /// all the kernel's RST once pnfsd is dead, is dropped, so a
    /// reconnecting client retransmits its SYN (1 s) instead of taking
    /// ECONNREFUSED, and the retry lands on the node that took the VIP.
    fn rules(&self, vip: IpAddr) -> [Vec<String>; 2] {
        let base = |pref: &str| -> Vec<String> {
            [family(vip), "rule", "add", "pref", pref, "from", &vip.to_string(), "ipproto", "tcp", "sport", &self.nfs_port.to_string()]
                .map(str::to_string)
                .to_vec()
        };
        let mut accept = base("100");
        accept.extend(["fwmark".into(), format!("{NFS_SOCKET_MARK:#x}"), "lookup".into(), "main".into()]);
        let mut drop = base("101");
        drop.push("blackhole".into());
        [accept, drop]
    }

    fn addr_spec(&self, vip: IpAddr) -> Vec<String> {
        vec![family(vip).into(), "addr".into(), String::new(), format!("{vip}/{}", self.prefix_len), "dev".into(), self.interface.clone()]
    }
}

/// How long a node that just took a VIP lets its kernel's RSTs out: the
/// connections clients had with the VIP's previous holder (cut off by a
/// partition, or on a host that died whole) now land here, and a RST
/// makes those clients reconnect at once instead of waiting out their
/// retransmissions. A SYN is not refused meanwhile: this node listens.
pub const STALE_CONNECTION_RESET_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Deletes every copy of `rule` (an `ip rule add ...` argument list).
fn delete_rule(rule: &[String]) {
    let mut del = rule.to_vec();
    del[2] = "del".into();
    for _ in 0..16 {
        if run_ip(&del).is_err() {
            break;
        }
    }
}

/// Exactly one copy of `rule`.
fn install_rule(rule: &[String]) -> Result<(), String> {
    delete_rule(rule);
    run_ip(rule).map(|_| ())
}

impl VipActuator for IpActuator {
    fn setup(&self, vips: &[IpAddr]) -> Result<(), String> {
        run_ip(&["link".into(), "show".into(), "dev".into(), self.interface.clone()])
            .map_err(|e| format!("mds.cluster.vip_interface {:?}: {e}", self.interface))?;
        for &vip in vips {
            for rule in self.rules(vip) {
                // Idempotent: delete every copy a previous run left, then add one.
                install_rule(&rule)?;
            }
            // A previous instance (killed) may have left it; claims decide anew.
            self.remove(vip)?;
        }
        Ok(())
    }

    fn add(&self, vip: IpAddr) -> Result<(), String> {
        let mut spec = self.addr_spec(vip);
        spec[2] = "replace".into();
        run_ip(&spec)?;
        // Stale connections of the previous holder get their RST for a
        // while (see STALE_CONNECTION_RESET_WINDOW), then the rule is back
        // to guard against this node's own death.
        let [_, drop] = self.rules(vip);
        delete_rule(&drop);
        std::thread::Builder::new()
            .name("vip-rst-rule".into())
            .spawn(move || {
                std::thread::sleep(STALE_CONNECTION_RESET_WINDOW);
                if let Err(e) = install_rule(&drop) {
                    log::error!("cluster: reinstalling the RST rule of VIP {vip}: {e}; a client reconnecting after this node dies waits 3 s more");
                }
            })
            .map_err(|e| format!("spawning the RST rule timer: {e}"))?;
        match vip {
            IpAddr::V4(a) => gratuitous_arp(&self.interface, a).map_err(|e| format!("gratuitous ARP for {vip} on {}: {e}", self.interface)),
            // The kernel sends unsolicited neighbour advertisements itself
            // when DAD completes; nothing more here.
            IpAddr::V6(_) => Ok(()),
        }
    }

    fn remove(&self, vip: IpAddr) -> Result<(), String> {
        let shown = run_ip(&[family(vip).into(), "-o".into(), "addr".into(), "show".into(), "dev".into(), self.interface.clone()])?;
        let needle = format!(" {vip}/");
        if !shown.contains(&needle) {
            return Ok(());
        }
        let mut spec = self.addr_spec(vip);
        spec[2] = "del".into();
        run_ip(&spec).map(|_| ())
    }
}

/// Broadcasts one gratuitous ARP request (sender and target IP = `ip`) on
/// `interface`, so neighbours point `ip` at this host's MAC at once.
fn gratuitous_arp(interface: &str, ip: std::net::Ipv4Addr) -> Result<(), String> {
    let mac_text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address")).map_err(|e| format!("reading its MAC: {e}"))?;
    let mac: Vec<u8> = mac_text.trim().split(':').filter_map(|h| u8::from_str_radix(h, 16).ok()).collect();
    let mac: [u8; 6] = mac.try_into().map_err(|_| format!("unexpected MAC {:?}", mac_text.trim()))?;
    let cname = std::ffi::CString::new(interface).map_err(|_| "bad interface name".to_string())?;
    // SAFETY: cname is a valid NUL-terminated string for the call's duration.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(format!("no interface {interface}"));
    }
    let mut frame = [0u8; 42];
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes()); // ARP
    frame[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&ip.octets());
    frame[38..42].copy_from_slice(&ip.octets()); // target MAC stays zero
    send_raw_frame(ifindex as i32, &frame).map_err(|e| e.to_string())
}

/// Sends one Ethernet frame on interface `ifindex` through an AF_PACKET
/// raw socket (needs CAP_NET_RAW).
fn send_raw_frame(ifindex: i32, frame: &[u8]) -> std::io::Result<()> {
    const ETH_P_ARP: u16 = 0x0806;
    // SAFETY: plain socket(2)/sendto(2)/close(2) calls: `addr` is a fully
    // initialised sockaddr_ll whose size is passed, `frame` outlives the
    // call, and the descriptor is closed exactly once on every path.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, ETH_P_ARP.to_be() as i32);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let sent = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if sent < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// Test actuator: records what it was asked (into a log the test may
/// share with its fence callback, to check the takeover order).
#[derive(Default)]
pub struct RecordingActuator {
    pub log: Arc<Mutex<Vec<String>>>,
    /// Written into the log with each event (the node's id, say).
    pub tag: String,
}

impl RecordingActuator {
    fn record(&self, what: String) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{} {what}", self.tag));
    }
}

impl VipActuator for RecordingActuator {
    fn setup(&self, vips: &[IpAddr]) -> Result<(), String> {
        self.record(format!("setup {vips:?}"));
        Ok(())
    }

    fn add(&self, vip: IpAddr) -> Result<(), String> {
        self.record(format!("add {vip}"));
        Ok(())
    }

    fn remove(&self, vip: IpAddr) -> Result<(), String> {
        self.record(format!("remove {vip}"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(n: u8) -> Vec<IpAddr> {
        (1..=n).map(|i| IpAddr::from([10, 0, 0, 100 + i])).collect()
    }

    #[test]
    fn keys_and_values_round_trip() {
        for vip in [IpAddr::from([10, 1, 2, 3]), "fd00::5".parse().unwrap()] {
            assert_eq!(vip_of_key(&vip_key(vip)), Some(vip));
        }
        assert_eq!(vip_of_key(b"Pxx"), None);
        assert_eq!(claim_holder(&claim_value(7, 7 << 32 | 3)), Some(7));
        assert_eq!(claim_holder(b"junk"), None);
    }

    #[test]
    fn each_live_node_claims_its_own_vip_only() {
        let vips = ips(3);
        let live: BTreeSet<u32> = [1, 2, 3].into();
        for me in 1..=3 {
            assert_eq!(vips_to_claim(me, &vips, &live, &BTreeMap::new(), |_| true), vec![vips[me as usize - 1]]);
        }
        // Already claimed: nothing to do, even for the preferred node.
        let claims: BTreeMap<IpAddr, u32> = [(vips[0], 2)].into();
        assert!(vips_to_claim(1, &vips, &live, &claims, |_| true).is_empty());
    }

    #[test]
    fn dead_nodes_vips_go_to_the_least_loaded_lowest_id_and_survivors_agree() {
        let vips = ips(4);
        let live: BTreeSet<u32> = [2, 3].into();
        let claims: BTreeMap<IpAddr, u32> = [(vips[1], 2), (vips[2], 3)].into();
        // VIP 1 and VIP 4 are orphaned; equal loads: node 2 (lower id) takes
        // VIP 1, then node 3 (now less loaded) takes VIP 4.
        let two = vips_to_claim(2, &vips, &live, &claims, |_| true);
        let three = vips_to_claim(3, &vips, &live, &claims, |_| true);
        assert_eq!((two, three), (vec![vips[0]], vec![vips[3]]));
        // Node 3 already holds two: node 2 takes both orphans.
        let claims: BTreeMap<IpAddr, u32> = [(vips[1], 3), (vips[2], 3)].into();
        assert_eq!(vips_to_claim(2, &vips, &live, &claims, |_| true), vec![vips[0], vips[3]]);
        assert!(vips_to_claim(3, &vips, &live, &claims, |_| true).is_empty());
    }

    #[test]
    fn orphans_wait_until_their_node_may_be_taken_over() {
        let vips = ips(2);
        let live: BTreeSet<u32> = [1].into();
        assert_eq!(vips_to_claim(1, &vips, &live, &BTreeMap::new(), |n| n != 2), vec![vips[0]]);
        assert_eq!(vips_to_claim(1, &vips, &live, &BTreeMap::new(), |_| true), vips);
    }

    #[test]
    fn a_missing_interface_is_a_clear_error_before_anything_is_touched() {
        let a = IpActuator { interface: "pnfs-nosuch0".into(), prefix_len: 24, nfs_port: 2049 };
        let e = a.setup(&["10.0.0.101".parse().unwrap()]).unwrap_err();
        assert!(e.starts_with("mds.cluster.vip_interface \"pnfs-nosuch0\": "), "{e}");
    }

    #[test]
    fn ip_rules_match_the_design() {
        let a = IpActuator { interface: "eth0".into(), prefix_len: 24, nfs_port: 2049 };
        let [accept, drop] = a.rules("10.0.0.101".parse().unwrap());
        assert_eq!(accept.join(" "), "-4 rule add pref 100 from 10.0.0.101 ipproto tcp sport 2049 fwmark 0x5046 lookup main");
        assert_eq!(drop.join(" "), "-4 rule add pref 101 from 10.0.0.101 ipproto tcp sport 2049 blackhole");
    }
}
