//! The NFS listener: TCP connections, RPC record marking, ONC RPC call
//! checks, and COMPOUND execution on blocking threads (metadata commits
//! fsync), with replies written back in completion order.

use crate::compound::{CompoundOutcome, ConnInfo, Dispatcher};
use crate::mds::Mds;
use pnfs_protocol::record::{record_header, RecordReader};
use pnfs_protocol::rpc::{self, AcceptStat, AuthStat, Credential, Message};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

/// Requests one connection may have executing at once (the session slot
/// table bounds well-behaved clients; this bounds the rest).
const MAX_INFLIGHT_PER_CONNECTION: usize = 256;

pub struct Server {
    mds: Arc<Mds>,
    dispatcher: Arc<Dispatcher>,
    next_conn: AtomicU64,
}

impl Server {
    pub fn new(mds: Arc<Mds>) -> Arc<Server> {
        Arc::new(Server { mds, dispatcher: Arc::new(Dispatcher::new()), next_conn: AtomicU64::new(1) })
    }

    /// Accepts connections until the listener fails. With pNFS on, the
    /// control listener for data servers (mds.control_bind) runs too.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        let control = match self.mds.cfg.control_bind {
            Some(addr) if self.mds.pnfs.is_some() => Some(TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("mds.control_bind {addr}: {e}"))
            })?),
            _ => None,
        };
        self.serve_with_control(listener, control).await
    }

    /// Like `serve`, with an already bound control listener (tests bind port 0).
    pub async fn serve_with_control(
        self: Arc<Self>,
        listener: TcpListener,
        control: Option<TcpListener>,
    ) -> std::io::Result<()> {
        if let (Some(l), Some(p)) = (control, self.mds.pnfs.clone()) {
            log::info!(
                "pNFS on: data servers register at {} (stripe unit {}, stripe count {})",
                l.local_addr()?,
                p.cfg.stripe_unit,
                if p.cfg.stripe_count == 0 { "all".to_string() } else { p.cfg.stripe_count.to_string() }
            );
            tokio::spawn(async move {
                if let Err(e) = crate::pnfs::registry::serve_control(p, l).await {
                    log::error!("control listener failed: {e}");
                }
            });
        }
        let conns = Arc::new(Semaphore::new(self.mds.cfg.max_connections));
        let reaper = self.clone();
        tokio::spawn(async move {
            let period = reaper.mds.lease() / 4;
            let mut tick = tokio::time::interval(period.max(std::time::Duration::from_secs(1)));
            loop {
                tick.tick().await;
                let m = reaper.mds.clone();
                let _ = tokio::task::spawn_blocking(move || m.expire_leases()).await;
            }
        });
        loop {
            let (sock, peer) = listener.accept().await?;
            let Ok(permit) = conns.clone().try_acquire_owned() else {
                log::warn!("refusing connection from {peer}: mds.max_connections reached");
                drop(sock);
                continue;
            };
            let _ = sock.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.connection(sock, peer).await {
                    log::debug!("connection {peer}: {e}");
                }
                drop(permit);
            });
        }
    }

    async fn connection(self: Arc<Self>, sock: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
        let conn = Arc::new(ConnInfo { id: self.next_conn.fetch_add(1, Ordering::Relaxed), peer: peer.ip() });
        log::debug!("connection {} from {peer}", conn.id);
        let (mut rd, mut wr) = sock.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(MAX_INFLIGHT_PER_CONNECTION);
        // Callbacks to this client go out on this connection when it is bound
        // to a session's back channel.
        self.mds.callbacks.register_conn(conn.id, tx.clone());
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let hdr = record_header(msg.len());
                if wr.write_all(&hdr).await.is_err() || wr.write_all(&msg).await.is_err() {
                    break;
                }
            }
        });
        let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_PER_CONNECTION));
        let mut records = RecordReader::new(self.mds.cfg.max_record_bytes as usize);
        let mut buf = vec![0u8; 64 * 1024];
        let result = 'read: loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            let recs = match records.feed_all(&buf[..n]) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("closing connection from {peer}: {e}");
                    break 'read Ok(());
                }
            };
            for rec in recs {
                if runs_inline(&rec) {
                    let reply = std::panic::catch_unwind(AssertUnwindSafe(|| self.handle_record(&conn, &rec)))
                        .unwrap_or_else(|_| {
                            log::error!("internal error while handling a request from {}; answered SYSTEM_ERR", conn.peer);
                            rpc::system_err_reply(&rec)
                        });
                    if let Some(r) = reply {
                        if tx.send(r).await.is_err() {
                            break 'read Ok(());
                        }
                    }
                    continue;
                }
                let Ok(permit) = inflight.clone().acquire_owned().await else { break 'read Ok(()) };
                let me = self.clone();
                let conn = conn.clone();
                let tx = tx.clone();
                tokio::task::spawn_blocking(move || {
                    let reply = std::panic::catch_unwind(AssertUnwindSafe(|| me.handle_record(&conn, &rec)))
                        .unwrap_or_else(|_| {
                            log::error!("internal error while handling a request from {}; answered SYSTEM_ERR", conn.peer);
                            rpc::system_err_reply(&rec)
                        });
                    if let Some(r) = reply {
                        let _ = tx.blocking_send(r);
                    }
                    drop(permit);
                });
            }
        };
        self.mds.callbacks.unregister_conn(conn.id);
        drop(tx);
        let _ = writer.await;
        result
    }

    /// One RPC record in, at most one RPC reply out.
    fn handle_record(&self, conn: &ConnInfo, rec: &[u8]) -> Option<Vec<u8>> {
        let msg = match rpc::parse_message(rec) {
            Ok(m) => m,
            Err(rpc::RpcError::Unreadable) => return None,
            Err(rpc::RpcError::Garbage { xid }) => return Some(rpc::accepted_reply(xid, AcceptStat::GarbageArgs)),
        };
        let (header, args) = match msg {
            Message::Call { header, args } => (header, args),
            Message::Reply { xid, .. } => {
                // A reply to one of our callbacks.
                if !self.mds.callbacks.deliver_reply(xid, rec.to_vec()) {
                    log::debug!("RPC reply xid {xid:#x} on connection {} matches no callback", conn.id);
                }
                return None;
            }
        };
        let xid = header.xid;
        if header.rpcvers != rpc::RPC_VERSION {
            return Some(rpc::rpc_mismatch_reply(xid));
        }
        if header.prog != rpc::NFS4_PROGRAM {
            return Some(rpc::accepted_reply(xid, AcceptStat::ProgUnavail));
        }
        if header.vers != rpc::NFS_V4 {
            return Some(rpc::prog_mismatch_reply(xid, rpc::NFS_V4, rpc::NFS_V4));
        }
        if let Credential::Unsupported(flavor) = header.cred {
            log::debug!("refusing auth flavor {flavor} from {}", conn.peer);
            return Some(rpc::auth_error_reply(xid, AuthStat::BadCred));
        }
        match header.proc_ {
            rpc::PROC_NULL => Some(rpc::accepted_reply(xid, AcceptStat::Success)),
            rpc::PROC_COMPOUND => {
                let mut e = pnfs_protocol::Encoder::new();
                match self.dispatcher.run(&self.mds, conn, header.cred, args) {
                    CompoundOutcome::Reply(body) => {
                        rpc::begin_accepted_reply(&mut e, xid, AcceptStat::Success);
                        e.buf.extend_from_slice(&body);
                    }
                    CompoundOutcome::Garbage => rpc::begin_accepted_reply(&mut e, xid, AcceptStat::GarbageArgs),
                }
                Some(e.into_inner())
            }
            _ => Some(rpc::accepted_reply(xid, AcceptStat::ProcUnavail)),
        }
    }
}

/// A NULL call, or a COMPOUND of operations that never wait (see
/// `compound::runs_inline`): answered on the connection's task.
fn runs_inline(rec: &[u8]) -> bool {
    match rpc::parse_message(rec) {
        Ok(Message::Call { header, args }) => match header.proc_ {
            rpc::PROC_NULL => true,
            rpc::PROC_COMPOUND => crate::compound::runs_inline(args),
            _ => false,
        },
        _ => false,
    }
}

/// Runs an MDS (pNFS control listener included) on ephemeral loopback ports
/// in a background thread with its own runtime, for tests and embedding.
/// `cfg.bind` / `cfg.control_bind` are ignored. Returns (NFS address,
/// control address) once the NFS port answers.
pub fn spawn_on_loopback(cfg: crate::MdsConfig) -> std::io::Result<(SocketAddr, SocketAddr)> {
    let nfs = std::net::TcpListener::bind("127.0.0.1:0")?;
    let ctl = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addrs = (nfs.local_addr()?, ctl.local_addr()?);
    nfs.set_nonblocking(true)?;
    ctl.set_nonblocking(true)?;
    let mds = Mds::open(cfg).map_err(std::io::Error::other)?;
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return log::error!("MDS runtime: {e}"),
        };
        rt.block_on(async move {
            let (Ok(nfs), Ok(ctl)) = (TcpListener::from_std(nfs), TcpListener::from_std(ctl)) else {
                return log::error!("MDS listeners could not join the runtime");
            };
            if let Err(e) = Server::new(mds).serve_with_control(nfs, Some(ctl)).await {
                log::error!("MDS stopped: {e}");
            }
        });
    });
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(addrs.0).is_err() {
        if started.elapsed() > std::time::Duration::from_secs(10) {
            return Err(std::io::Error::other("MDS did not answer within 10 s"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(addrs)
}

/// Waits until the MDS whose control listener is `ctl` knows data server
/// `ds_id` (a heartbeat in its name is accepted), for tests and scripts
/// that start data servers next to [`spawn_on_loopback`]. `key_file`: the
/// cluster key (the MDS's mds.cluster_key_file).
pub fn wait_ds_registered(
    ctl: SocketAddr,
    key_file: &std::path::Path,
    ds_id: &str,
    timeout: std::time::Duration,
) -> Result<(), String> {
    let key = pnfs_protocol::seal::ClusterKey::load(key_file)?;
    use pnfs_protocol::wire::*;
    use pnfs_protocol::{Decoder, XdrDecode};
    let t = std::time::Instant::now();
    loop {
        let a = ctl_heartbeat_args {
            cha_ds_id: ds_id.as_bytes().into(),
            cha_free_bytes: 1 << 30,
            cha_bytes_read: 0,
            cha_bytes_written: 0,
        };
        let known = crate::pnfs::client::CtlClient::new(pnfs_protocol::control_auth::ControlKeys::new(&key), 0)
            .call(&ctl.to_string(), PNFSCTL_MDS_PROGRAM, CTL_PROC_HEARTBEAT, &a)
            .ok()
            .and_then(|body| ctl_heartbeat_res::decode(&mut Decoder::new(&body)).ok())
            .is_some_and(|r| r.chr_status == ctl_status::CTL_OK);
        if known {
            return Ok(());
        }
        if t.elapsed() >= timeout {
            return Err(format!("data server {ds_id} did not register with {ctl} within {timeout:?}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
