//! pnfsd: the appliance daemon. `pnfsd --config FILE` runs the roles the
//! file enables; `pnfsd --check --config FILE` only validates it.

mod config;
mod metrics_http;

use std::process::ExitCode;

const USAGE: &str = "\
pnfsd - pNFS v4.2 storage appliance daemon

USAGE:
    pnfsd --config FILE [--check | --fsck]
    pnfsd --make-cluster-key FILE
    pnfsd --help | --version

OPTIONS:
    -c, --config FILE   TOML configuration (see pnfsd.example.toml)
        --check         validate the configuration and exit
        --fsck          check the metadata store's namespace (server stopped) and exit
        --make-cluster-key FILE
                        write a new random cluster key (mode 0600; never overwrites) and exit;
                        copy it to every node as mds.cluster_key_file / ds.cluster_key_file
    -h, --help          print this help
    -V, --version       print the version

ENVIRONMENT:
    PNFSD_LOG           log filter overriding node.log (e.g. debug, pnfs_mds=trace)
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut config_path = None;
    let mut check_only = false;
    let mut fsck = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "-V" | "--version" => {
                println!("pnfsd {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "-c" | "--config" => match args.next() {
                Some(p) => config_path = Some(p),
                None => return fail("--config needs a file name"),
            },
            "--make-cluster-key" => {
                let Some(p) = args.next() else { return fail("--make-cluster-key needs a file name") };
                return match pnfs_protocol::seal::ClusterKey::create(std::path::Path::new(&p)) {
                    Ok(_) => {
                        println!("{p}: new cluster key written; copy it (mode 0600) to every MDS and DS node");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e),
                };
            }
            "--check" => check_only = true,
            "--fsck" => fsck = true,
            other => return fail(&format!("unknown argument {other:?}; see pnfsd --help")),
        }
    }
    let Some(path) = config_path else { return fail("no configuration given; run pnfsd --config FILE (see --help)") };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return fail(&format!("reading {path}: {e}")),
    };
    let cfg = match config::parse(&text) {
        Ok(c) => c,
        Err(e) => return fail(&format!("{path}: {e}")),
    };
    if check_only {
        println!("{path}: configuration is valid");
        return ExitCode::SUCCESS;
    }
    if fsck {
        let Some(mds_cfg) = cfg.mds else { return fail("--fsck needs an [mds] table") };
        return match pnfs_mds::mds::fsck(&mds_cfg) {
            Ok(p) if p.is_empty() => {
                println!("fsck: namespace consistent");
                ExitCode::SUCCESS
            }
            Ok(p) => {
                p.iter().for_each(|x| println!("fsck: {x}"));
                fail(&format!("{} problem(s) found", p.len()))
            }
            Err(e) => fail(&format!("fsck: {e}")),
        };
    }
    let filter = std::env::var("PNFSD_LOG").unwrap_or(cfg.node.log.clone());
    env_logger::Builder::new().parse_filters(&filter).format_timestamp_millis().init();

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if cfg.node.worker_threads > 0 {
        rt.worker_threads(cfg.node.worker_threads);
    }
    let rt = match rt.build() {
        Ok(r) => r,
        Err(e) => return fail(&format!("starting the runtime: {e}")),
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn run(cfg: config::Config) -> Result<(), String> {
    let has = |role: &str| cfg.node.roles.iter().any(|r| r == role);
    // The DS role runs on its own threads (reactors, control, registration).
    let ds = match cfg.ds.clone().filter(|_| has("ds")) {
        Some(ds_cfg) => Some(tokio::task::spawn_blocking(move || pnfs_ds::run(ds_cfg)).await.map_err(|e| e.to_string())??),
        None => None,
    };
    if let Some(bind) = cfg.node.metrics_bind {
        let mut sources: Vec<metrics_http::Source> = Vec::new();
        if has("mds") {
            sources.push(std::sync::Arc::new(|| pnfs_mds::metrics::metrics().encode()));
        }
        if let Some(h) = &ds {
            let snap = h.stats_source();
            let id = h.id();
            sources.push(std::sync::Arc::new(move || metrics_http::ds_text(&id, &snap())));
        }
        tokio::spawn(async move {
            if let Err(e) = metrics_http::serve(bind, sources).await {
                log::error!("{e}");
            }
        });
    }
    let r = match cfg.mds.filter(|_| has("mds")) {
        Some(mds_cfg) => run_mds(mds_cfg).await,
        None => wait_for_signal().await,
    };
    if let Some(h) = ds {
        h.shutdown();
        let _ = tokio::task::spawn_blocking(move || h.join()).await;
    }
    r
}

async fn wait_for_signal() -> Result<(), String> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => log::info!("interrupted; exiting"),
        _ = term.recv() => log::info!("terminated; exiting"),
    }
    Ok(())
}

async fn run_mds(mds_cfg: pnfs_mds::MdsConfig) -> Result<(), String> {
    let bind = mds_cfg.bind;
    let advertise = mds_cfg.advertise.clone().unwrap_or_else(|| bind.to_string());
    let mds = tokio::task::spawn_blocking(move || pnfs_mds::Mds::open(mds_cfg))
        .await
        .map_err(|e| e.to_string())??;
    // Before serving: drop orphaned objects, trim bytes past committed sizes.
    let rec = mds.clone();
    tokio::task::spawn_blocking(move || rec.recover_data()).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(|e| format!("mds.bind {bind}: {e}"))?;
    let exports: Vec<_> = mds.exports.iter().map(|e| e.path.clone()).collect();
    log::info!("mds listening on {bind} (clients use {advertise}); exports {exports:?}");
    let cluster = start_cluster(&mds, &listener).await?;
    let server = pnfs_mds::Server::new(mds);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    let r = tokio::select! {
        r = server.serve(listener) => r.map_err(|e| format!("mds listener: {e}")),
        _ = tokio::signal::ctrl_c() => { log::info!("interrupted; exiting"); Ok(()) }
        _ = term.recv() => { log::info!("terminated; exiting"); Ok(()) }
    };
    if let Some(node) = cluster {
        // Hands its VIPs over at once (lease revoked) instead of after the lease.
        let _ = tokio::task::spawn_blocking(move || node.shutdown()).await;
    }
    r
}

/// `[mds.cluster]`: marks the NFS listener's sockets (RST suppression on
/// the VIPs), joins the cluster and routes the MDS's write gate and
/// cross-node recalls through the node.
#[cfg(feature = "etcd")]
async fn start_cluster(
    mds: &std::sync::Arc<pnfs_mds::Mds>,
    listener: &tokio::net::TcpListener,
) -> Result<Option<std::sync::Arc<pnfs_mds::cluster::ClusterNode>>, String> {
    use std::os::fd::AsRawFd;
    if mds.cfg.cluster.is_none() {
        return Ok(None);
    }
    if let Err(e) = pnfs_mds::cluster::mark_listener(listener.as_raw_fd()) {
        log::error!("mds.cluster: cannot mark the NFS listener (SO_MARK: {e}; needs root): clients of a VIP whose node dies wait for its RST instead of a SYN retry");
    }
    // Takeover fences the dead node on every DS first; a node that rejoins
    // with a new boot count speaks its new epoch to the DSes from then on.
    let p = mds.pnfs.clone();
    let fence: pnfs_mds::cluster::FenceFn = Box::new(move |node, epoch| p.as_ref().map_or(Ok(()), |p| p.fence_node(node, epoch)));
    let p = mds.pnfs.clone();
    let use_epoch = Box::new(move |epoch: u64| {
        if let Some(p) = &p {
            p.use_epoch(epoch)
        }
    });
    let m = mds.clone();
    let node = tokio::task::spawn_blocking(move || pnfs_mds::cluster::start_for(&m, fence, use_epoch))
        .await
        .map_err(|e| e.to_string())??;
    node.install_gates();
    Ok(Some(node))
}

#[cfg(not(feature = "etcd"))]
async fn start_cluster(mds: &std::sync::Arc<pnfs_mds::Mds>, _listener: &tokio::net::TcpListener) -> Result<Option<NoCluster>, String> {
    match mds.cfg.cluster {
        Some(_) => Err("mds.cluster: needs a pnfsd built with --features etcd".into()),
        None => Ok(None),
    }
}

/// Stands in for the cluster node in a build without etcd (never made).
#[cfg(not(feature = "etcd"))]
enum NoCluster {}

#[cfg(not(feature = "etcd"))]
impl NoCluster {
    fn shutdown(self) {}
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("pnfsd: {msg}");
    ExitCode::FAILURE
}
