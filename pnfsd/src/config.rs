//! pnfsd's TOML configuration: which roles this node runs and their settings.
//! Errors are one line naming the key, so an operator can fix them directly.

use pnfs_ds::DsConfig;
use pnfs_mds::MdsConfig;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    #[serde(default)]
    pub mds: Option<MdsConfig>,
    #[serde(default)]
    pub ds: Option<DsConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// "mds" and/or "ds".
    pub roles: Vec<String>,
    /// Log filter (error, warn, info, debug, trace or module=level list);
    /// the PNFSD_LOG environment variable overrides it.
    #[serde(default = "default_log")]
    pub log: String,
    /// Worker threads for the async runtime (0: one per core).
    #[serde(default)]
    pub worker_threads: usize,
    /// Serve Prometheus/OpenMetrics text at http://ADDR/metrics (off when absent).
    #[serde(default)]
    pub metrics_bind: Option<std::net::SocketAddr>,
}

fn default_log() -> String {
    "info".into()
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses and validates; the error is a single line.
pub fn parse(text: &str) -> Result<Config, String> {
    let de = toml::Deserializer::new(text);
    let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let at = inner.span().map(|s| format!(" (line {})", line_of(text, s.start))).unwrap_or_default();
        let msg = inner.message().replace('\n', " ");
        if path == "." || path.is_empty() {
            format!("{msg}{at}")
        } else {
            format!("{path}: {msg}{at}")
        }
    })?;
    for r in &cfg.node.roles {
        match r.as_str() {
            "mds" | "ds" => {}
            other => return Err(format!("node.roles: unknown role {other:?}; expected \"mds\" or \"ds\"")),
        }
    }
    if cfg.node.roles.is_empty() {
        return Err("node.roles: list at least one role, e.g. roles = [\"mds\"]".into());
    }
    if cfg.node.roles.iter().any(|r| r == "mds") {
        let mds = cfg.mds.as_ref().ok_or("mds: the mds role needs an [mds] table")?;
        mds.validate()?;
    }
    if cfg.node.roles.iter().any(|r| r == "ds") {
        let ds = cfg.ds.as_ref().ok_or("ds: the ds role needs a [ds] table")?;
        ds.validate()?;
        if let Some(mds) = cfg.mds.as_ref().filter(|_| cfg.node.roles.iter().any(|r| r == "mds")) {
            if mds.bind.port() == ds.bind.port() && mds.bind.port() != 0 {
                return Err(format!("ds.bind: port {} is already mds.bind's; give the data server its own", ds.bind.port()));
            }
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
roles = ["mds"]

[mds]
bind = "127.0.0.1:2049"
metadata_dir = "/tmp/m"
data_dir = "/tmp/d"

[[mds.exports]]
path = "/export"
"#;

    #[test]
    fn good_config_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.mds.unwrap().exports[0].path, "/export");
    }

    #[test]
    fn errors_name_the_key_on_one_line() {
        let bad = GOOD.replace("bind = \"127.0.0.1:2049\"", "bind = \"nowhere\"");
        let e = parse(&bad).unwrap_err();
        assert!(e.starts_with("mds.bind:"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let unknown = GOOD.replace("data_dir", "dataa_dir");
        let e = parse(&unknown).unwrap_err();
        assert!(e.contains("dataa_dir"), "{e}");
        let e = parse(&GOOD.replace("path = \"/export\"", "path = \"rel\"")).unwrap_err();
        assert!(e.starts_with("mds.exports[0].path"), "{e}");
        let e = parse(&GOOD.replace("[\"mds\"]", "[\"web\"]")).unwrap_err();
        assert!(e.starts_with("node.roles"), "{e}");
    }

    #[test]
    fn layout_policy_keys() {
        let c = parse(&GOOD.replace("data_dir = \"/tmp/d\"", "data_dir = \"/tmp/d\"\nlayout = \"mirror3\"\nflex_segment_bytes = 8388608")).unwrap();
        let mds = c.mds.unwrap();
        assert_eq!(mds.layout, pnfs_mds::pnfs::LayoutPolicy::Mirror3);
        assert_eq!(mds.flex_segment_bytes, 8 << 20);
        let d = parse(GOOD).unwrap().mds.unwrap();
        assert_eq!((d.layout, d.flex_segment_bytes), (pnfs_mds::pnfs::LayoutPolicy::Stripe, 1 << 40), "defaults: one segment per file");
        let e = parse(&GOOD.replace("data_dir = \"/tmp/d\"", "data_dir = \"/tmp/d\"\nlayout = \"mirror4\"")).unwrap_err();
        assert!(e.starts_with("mds.layout:") && e.contains("mirror2"), "{e}");
        let e = parse(&GOOD.replace("data_dir = \"/tmp/d\"", "data_dir = \"/tmp/d\"\nflex_segment_bytes = 1000")).unwrap_err();
        assert!(e.starts_with("mds.flex_segment_bytes:"), "{e}");
    }

    #[test]
    fn ds_role() {
        let ds = r#"
[node]
roles = ["ds"]

[ds]
id = "ds1"
bind = "127.0.0.1:2050"
control_bind = "127.0.0.1:20491"
mds_control = "127.0.0.1:20490"
data_dir = "/tmp/ds1"
cluster_key_file = "/tmp/ds1.key"
"#;
        let c = parse(ds).unwrap();
        assert_eq!(c.ds.unwrap().reactors, 2);
        let e = parse(&ds.replace("reactors", "x").replace("data_dir", "dta_dir")).unwrap_err();
        assert!(e.contains("dta_dir"), "{e}");
        let e = parse(&ds.replace("127.0.0.1:2050", "0.0.0.0:2050")).unwrap_err();
        assert!(e.starts_with("ds.bind:"), "{e}");
        let e = parse(&ds.replace("[ds]", "[dss]")).unwrap_err();
        assert!(!e.is_empty());
        let e = parse(&GOOD.replace("[\"mds\"]", "[\"mds\", \"ds\"]")).unwrap_err();
        assert!(e.starts_with("ds:"), "{e}");
        let both = format!("{}\n{}", GOOD.replace("[\"mds\"]", "[\"mds\", \"ds\"]"), &ds[ds.find("[ds]").unwrap()..]);
        parse(&both).unwrap();
        let e = parse(&both.replace("127.0.0.1:2050", "127.0.0.1:2049")).unwrap_err();
        assert!(e.starts_with("ds.bind:"), "{e}");
    }
}
