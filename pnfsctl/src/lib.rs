//! pnfsctl, the management CLI of a pnfsd cluster. It talks to one MDS's
//! admin program (PNFSCTL_ADMIN_PROGRAM, on the MDS control listener,
//! authenticated with the cluster key: `pnfs_mds::admin`), and prints what
//! it answers for people, or as JSON with `--json`.
//!
//! `run` is the whole program minus the process (tests call it); main.rs
//! maps its error to an exit code.

pub mod client;
pub mod render;

use client::AdminClient;
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, XdrDecode};
use serde::Deserialize;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

pub const USAGE: &str = "\
pnfsctl - manage a pnfsd cluster (talks to an MDS)

USAGE:
    pnfsctl [OPTIONS] status
    pnfsctl [OPTIONS] ds list [--no-count]
    pnfsctl [OPTIONS] ds add|drain|remove|declare-lost <INDEX|ID>
    pnfsctl [OPTIONS] layout PATH

COMMANDS:
    status              MDS node(s), data servers up/down/draining/lost, capacity, files,
                        resilver and rebalance progress
    ds list             every data server: index, id, state, alive, last heartbeat, space,
                        objects on it (--no-count skips counting: a scan of every file's placement)
    ds add              put a drained, removed or lost data server back into service
                        (a new data server needs no add: it joins by registering)
    ds drain            no new files on it; shows the objects left on it
    ds remove           take an empty data server out for good (drain it first)
    ds declare-lost     its copies count as gone, whether or not it answers
    layout PATH         a file's layout: type, policy, segments, mirrors, which data server
                        holds each stripe and the object's size there. PATH is the path from
                        the namespace root, export included (/export/dir/file)

OPTIONS:
    -c, --config FILE   a pnfsd config with an [mds] table: its mds.control_bind and
                        mds.cluster_key_file (default <metadata_dir>/cluster.key);
                        also from the PNFSD_CONFIG environment variable
        --mds HOST:PORT the MDS control listener (overrides the config)
        --key FILE      the cluster key file (overrides the config)
        --json          print JSON instead of text
    -h, --help          print this help

<INDEX|ID>: a data server's index, else its id; id:NAME is always an id.
";

/// Why pnfsctl failed: the exit code is 2 for usage, 1 for the rest.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    Usage(String),
    Failed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "{m}; see pnfsctl --help"),
            Error::Failed(m) => f.write_str(m),
        }
    }
}

fn usage(m: impl Into<String>) -> Error {
    Error::Usage(m.into())
}

#[derive(Debug, Default)]
struct Options {
    config: Option<PathBuf>,
    mds: Option<String>,
    key: Option<PathBuf>,
    json: bool,
    help: bool,
    command: Vec<String>,
}

fn parse_options(args: &[String]) -> Result<Options, Error> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| usage(format!("{name} needs a value")));
        match a.as_str() {
            "-h" | "--help" => o.help = true,
            "-c" | "--config" => o.config = Some(value(a)?.into()),
            "--mds" => o.mds = Some(value(a)?),
            "--key" => o.key = Some(value(a)?.into()),
            "--json" => o.json = true,
            _ => o.command.push(a.clone()),
        }
    }
    if o.config.is_none() {
        o.config = std::env::var_os("PNFSD_CONFIG").map(PathBuf::from);
    }
    Ok(o)
}

/// The parts of a pnfsd config pnfsctl reads: the [mds] table (the other
/// tables are the daemon's).
#[derive(Deserialize)]
struct PnfsdConfig {
    mds: Option<pnfs_mds::MdsConfig>,
}

/// Where to send calls: the MDS control address and the cluster key file.
fn target(o: &Options) -> Result<(String, PathBuf), Error> {
    let from_config = match &o.config {
        Some(path) if o.mds.is_none() || o.key.is_none() => {
            let shown = path.display();
            let text = std::fs::read_to_string(path).map_err(|e| Error::Failed(format!("reading {shown}: {e}")))?;
            let cfg: PnfsdConfig = toml::from_str(&text).map_err(|e| Error::Failed(format!("{shown}: {}", e.message())))?;
            let mds = cfg.mds.ok_or_else(|| {
                Error::Failed(format!("{shown} has no [mds] table: give the MDS with --mds HOST:PORT and --key FILE"))
            })?;
            let ctl = mds.control_bind.ok_or_else(|| {
                Error::Failed(format!("{shown}: mds.control_bind is not set, so this MDS has no pNFS role and nothing to manage"))
            })?;
            Some((reachable(ctl), mds.cluster_key_path()))
        }
        _ => None,
    };
    let mds = o.mds.clone().or_else(|| from_config.as_ref().map(|c| c.0.clone()));
    let key = o.key.clone().or_else(|| from_config.as_ref().map(|c| c.1.clone()));
    match (mds, key) {
        (Some(m), Some(k)) => Ok((m, k)),
        _ => Err(usage(
            "say which MDS: --config FILE (a pnfsd config with [mds] control_bind) or --mds HOST:PORT --key CLUSTER_KEY_FILE",
        )),
    }
}

/// A bind address to connect to: an unspecified address (0.0.0.0, ::)
/// is this host's loopback.
fn reachable(bind: SocketAddr) -> String {
    let mut a = bind;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    a.to_string()
}

fn decode<'a, T: XdrDecode<'a>>(body: &'a [u8]) -> Result<T, Error> {
    T::decode(&mut Decoder::new(body)).map_err(|e| Error::Failed(format!("undecodable answer from the MDS: {e}")))
}

fn failed_unless_ok(status: adm_status, message: &[u8]) -> Result<(), Error> {
    match status {
        adm_status::ADM_OK => Ok(()),
        adm_status::ADM_NOENT | adm_status::ADM_REFUSED | adm_status::ADM_INVAL if !message.is_empty() => {
            Err(Error::Failed(String::from_utf8_lossy(message).into_owned()))
        }
        s => Err(Error::Failed(format!("{} ({s:?})", String::from_utf8_lossy(message)))),
    }
}

fn ds_op(word: &str) -> Option<adm_ds_op> {
    Some(match word {
        "add" => adm_ds_op::ADM_DS_ADD,
        "drain" => adm_ds_op::ADM_DS_DRAIN,
        "remove" => adm_ds_op::ADM_DS_REMOVE,
        "declare-lost" => adm_ds_op::ADM_DS_DECLARE_LOST,
        _ => return None,
    })
}

/// The whole program: parses `args` (without the program name), calls the
/// MDS, writes what it answered to `out`.
pub fn run(args: &[String], out: &mut dyn Write) -> Result<(), Error> {
    let o = parse_options(args)?;
    if o.help || o.command.is_empty() {
        let _ = out.write_all(USAGE.as_bytes());
        return if o.help { Ok(()) } else { Err(usage("no command given")) };
    }
    let words: Vec<&str> = o.command.iter().map(String::as_str).collect();
    // Check the command before connecting: a typo costs no round trip.
    match words.as_slice() {
        ["status"] | ["ds", "list"] | ["ds", "list", "--no-count"] | ["layout", _] => {}
        ["ds", op, _] if ds_op(op).is_some() => {}
        ["ds", op] if ds_op(op).is_some() => return Err(usage(format!("ds {op} needs a data server: its index or id"))),
        ["layout"] => return Err(usage("layout needs a PATH (from the namespace root, e.g. /export/dir/file)")),
        _ => return Err(usage(format!("unknown command {:?}", o.command.join(" ")))),
    }
    let (mds, key) = target(&o)?;
    let mut c = AdminClient::connect(&mds, &key).map_err(Error::Failed)?;
    let io = |e: std::io::Error| Error::Failed(format!("writing the output: {e}"));
    match words.as_slice() {
        ["status"] => {
            let body = c.call(ADM_PROC_STATUS, &()).map_err(Error::Failed)?;
            let r: adm_status_res = decode(&body)?;
            render::status(&r, o.json, out).map_err(io)?;
            failed_unless_ok(r.asr_status, &r.asr_message)
        }
        ["ds", "list", rest @ ..] => {
            let args = adm_ds_list_args { adl_count_objects: rest.is_empty() };
            let body = c.call(ADM_PROC_DS_LIST, &args).map_err(Error::Failed)?;
            let r: adm_ds_list_res = decode(&body)?;
            failed_unless_ok(r.adr_status, &r.adr_message)?;
            render::ds_list(&r, o.json, out).map_err(io)
        }
        ["ds", op, target] => {
            let args = adm_ds_state_args { ada_target: target.as_bytes().into(), ada_op: ds_op(op).expect("checked above") };
            let body = c.call(ADM_PROC_DS_SET_STATE, &args).map_err(Error::Failed)?;
            let r: adm_ds_state_res = decode(&body)?;
            failed_unless_ok(r.ads_status, &r.ads_message)?;
            render::ds_changed(&r, o.json, out).map_err(io)
        }
        ["layout", path] => {
            let args = adm_layout_args { ala_path: path.as_bytes().into() };
            let body = c.call(ADM_PROC_LAYOUT, &args).map_err(Error::Failed)?;
            let r: adm_layout_res = decode(&body)?;
            failed_unless_ok(r.alr_status, &r.alr_message)?;
            render::layout(path, &r, o.json, out).map_err(io)
        }
        _ => unreachable!("checked above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bad_commands_are_usage_errors_before_any_connection() {
        let mut out = Vec::new();
        for bad in [&["ds"][..], &["ds", "drain"], &["ds", "explode", "1"], &["layout"], &["frobnicate"], &["--mds"]] {
            match run(&strings(bad), &mut out) {
                Err(Error::Usage(_)) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(run(&strings(&["--help"]), &mut out).is_ok());
        assert!(String::from_utf8_lossy(&out).contains("declare-lost"));
    }

    #[test]
    fn the_target_comes_from_the_pnfsd_config_unless_given() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("pnfsd.toml");
        let text = format!(
            "[node]\nroles = [\"mds\"]\n[mds]\nbind = \"0.0.0.0:2049\"\ncontrol_bind = \"0.0.0.0:20491\"\n\
             metadata_dir = \"{0}/m\"\ndata_dir = \"{0}/d\"\n[[mds.exports]]\npath = \"/export\"\n",
            dir.path().display()
        );
        std::fs::write(&cfg, &text).unwrap();
        let o = |extra: &[&str]| {
            let mut a = strings(&["--config", cfg.to_str().unwrap()]);
            a.extend(strings(extra));
            parse_options(&a).unwrap()
        };
        assert_eq!(target(&o(&[])).unwrap(), ("127.0.0.1:20491".to_string(), dir.path().join("m/cluster.key")));
        let (m, k) = target(&o(&["--mds", "10.0.0.1:1", "--key", "/k"])).unwrap();
        assert_eq!((m.as_str(), k), ("10.0.0.1:1", PathBuf::from("/k")));
        std::fs::write(&cfg, text.replace("control_bind = \"0.0.0.0:20491\"\n", "")).unwrap();
        let Error::Failed(e) = target(&o(&[])).unwrap_err() else { panic!() };
        assert!(e.contains("mds.control_bind"), "{e}");
        let no_target = parse_options(&strings(&["status"])).map(|mut o| {
            o.config = None;
            o
        });
        assert!(matches!(target(&no_target.unwrap()), Err(Error::Usage(_))));
    }
}
