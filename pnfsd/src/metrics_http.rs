//! `GET /metrics`: the OpenMetrics text of every role running in this
//! process, on `node.metrics_bind`. A deliberately tiny HTTP/1.0 responder:
//! one request per connection, bounded request size, no keep-alive.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub type Source = Arc<dyn Fn() -> String + Send + Sync>;

/// A label value in OpenMetrics text: backslash, double quote and newline escaped.
fn label_value(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
}

/// Nanoseconds as decimal seconds, exactly.
fn seconds(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// The data server's counters in OpenMetrics text: per-op counts, errors
/// and latency histograms (buckets cumulative, `+Inf` equal to `_count`),
/// then the DS-wide counters; every sample labelled `ds`.
pub fn ds_text(id: &str, s: &pnfs_ds::DsStatsSnapshot) -> String {
    use std::fmt::Write;
    let id = label_value(id);
    let mut t = String::new();
    let _ = writeln!(t, "# TYPE pnfs_ds_ops counter\n# HELP pnfs_ds_ops NFS operations executed by the data server.");
    for (op, n) in &s.ops {
        let _ = writeln!(t, "pnfs_ds_ops_total{{ds=\"{id}\",op=\"{op}\"}} {n}");
    }
    let _ = writeln!(t, "# TYPE pnfs_ds_op_errors counter\n# HELP pnfs_ds_op_errors NFS operations that failed (status not NFS4_OK).");
    for (op, n) in &s.errors {
        let _ = writeln!(t, "pnfs_ds_op_errors_total{{ds=\"{id}\",op=\"{op}\"}} {n}");
    }
    let _ = writeln!(
        t,
        "# TYPE pnfs_ds_op_latency_seconds histogram\n# UNIT pnfs_ds_op_latency_seconds seconds\n# HELP pnfs_ds_op_latency_seconds NFS operation latency on the data server."
    );
    for (op, h) in &s.latency {
        for (le, n) in pnfs_ds::stats::LATENCY_LE.iter().zip(h.cumulative.iter()) {
            let _ = writeln!(t, "pnfs_ds_op_latency_seconds_bucket{{ds=\"{id}\",op=\"{op}\",le=\"{le}\"}} {n}");
        }
        let _ = writeln!(t, "pnfs_ds_op_latency_seconds_sum{{ds=\"{id}\",op=\"{op}\"}} {}", seconds(h.sum_ns));
        let _ = writeln!(t, "pnfs_ds_op_latency_seconds_count{{ds=\"{id}\",op=\"{op}\"}} {}", h.count);
    }
    let counters: [(&str, &str, u64); 33] = [
        ("compounds", "COMPOUNDs executed (replays included)", s.compounds),
        ("replays", "COMPOUNDs answered from the reply cache", s.replays),
        ("read_bytes", "READ payload bytes sent to clients", s.bytes_read),
        ("write_bytes", "WRITE payload bytes received from clients", s.bytes_written),
        ("payload_copies", "userspace copies of READ/WRITE payloads", s.payload_copies),
        ("buffer_pool_exhausted", "requests refused because a reactor buffer pool was empty", s.buffer_pool_exhausted),
        ("control_calls", "control-protocol calls served", s.control_calls),
        ("control_refused", "control-protocol calls refused: no or a wrong cluster-key tag, a replay, or an older MDS epoch", s.control_refused),
        ("control_fences", "CTL_FENCE calls applied: an MDS node's old epochs fenced by another node", s.control_fences),
        ("connections_accepted", "client connections accepted", s.connections_accepted),
        ("zero_copy_writes", "WRITE payloads received straight into an aligned pool buffer", s.zero_copy_writes),
        ("zero_copy_no_buffer", "large WRITEs received the ordinary way because the pool was empty", s.zero_copy_no_buffer),
        ("async_writes", "UNSTABLE4 WRITEs completed asynchronously on the io_uring", s.async_writes),
        ("fixed_file_ops", "io_uring I/O naming a registered file slot", s.fixed_file_ops),
        ("fixed_files_full", "descriptors left unregistered because a reactor file table was full", s.fixed_files_full),
        ("fdatasyncs", "fdatasyncs issued for COMMIT and stable WRITE (compare pnfs_ds_ops_total op=commit)", s.fdatasyncs),
        ("commits_clean", "COMMITs and stable WRITEs answered without a sync (object clean)", s.commits_clean),
        ("commits_covered", "volume backend: COMMITs and stable WRITEs answered without a flush because a volume flush for other objects covered them", s.commits_covered),
        ("volume_meta_writes", "volume backend: object-table entries and bitmap blocks written", s.volume_meta_writes),
        ("volume_extents_allocated", "volume backend: extents allocated (zeroed first)", s.volume_extents_allocated),
        ("poll_spins", "reactor polling rounds instead of sleeping (busy/adaptive poll mode)", s.poll_spins),
        ("reactor_parks", "times an adaptive reactor stopped polling and slept", s.reactor_parks),
        ("connections_refused", "client connections closed at accept (reactor total or per-address cap reached)", s.connections_refused),
        ("connections_refused_per_address", "client connections closed at accept because their address had ds.max_connections_per_address", s.connections_refused_per_address),
        ("connections_idle_closed", "client connections closed after ds.idle_timeout_seconds without a request", s.connections_idle_closed),
        ("records_timed_out", "client connections closed because a record did not complete within ds.record_timeout_seconds", s.records_timed_out),
        ("writes_not_admitted", "large WRITEs whose session, handle or stateid did not check before the data: no pool buffer taken, data dropped", s.writes_not_admitted),
        ("replies_stalled", "client connections cut off because they took no reply bytes for ds.record_timeout_seconds", s.replies_stalled),
        ("clients_evicted", "client IDs dropped to make room in a full table (unconfirmed, or silent for over a lease)", s.clients_evicted),
        ("clients_refused", "EXCHANGE_IDs answered NFS4ERR_DELAY because ds.max_clients live clients exist", s.clients_refused),
        ("copy_bytes", "data bytes this DS pulled from other data servers into its objects (resilver copies; holes not counted)", s.copy_bytes),
        ("copies_finished", "object copies finished: every byte durable, then the source's version taken", s.copies_finished),
        ("copy_failures", "object copy calls that failed (source gone or refused, version changed, destination error, busy)", s.copy_failures),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(t, "# TYPE pnfs_ds_{name} counter\n# HELP pnfs_ds_{name} {help}.\npnfs_ds_{name}_total{{ds=\"{id}\"}} {v}");
    }
    let _ = writeln!(
        t,
        "# TYPE pnfs_ds_copies_in_flight gauge\n# HELP pnfs_ds_copies_in_flight object copies running on this DS now (ds.copy_max_concurrent at most).\npnfs_ds_copies_in_flight{{ds=\"{id}\"}} {}",
        s.copies_in_flight
    );
    t.trim_end().to_string()
}

const MAX_REQUEST: usize = 8192;

/// The roles' texts joined and ended by one `# EOF`. OpenMetrics allows no
/// blank line, so each text loses its trailing whitespace (an MDS registry
/// whose last family has no samples yet ends in a newline).
fn exposition(sources: &[Source]) -> String {
    let mut text = String::new();
    for s in sources {
        let t = s();
        let t = t.trim_end();
        if !t.is_empty() {
            text.push_str(t);
            text.push('\n');
        }
    }
    text.push_str("# EOF\n");
    text
}

pub async fn serve(bind: SocketAddr, sources: Vec<Source>) -> Result<(), String> {
    let listener = TcpListener::bind(bind).await.map_err(|e| format!("node.metrics_bind {bind}: {e}"))?;
    log::info!("metrics on http://{bind}/metrics");
    let sources = Arc::new(sources);
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { continue };
        let sources = sources.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_REQUEST];
            let mut n = 0;
            // Read until the end of the request head (or the limit).
            while n < buf.len() {
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf[n..])).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(k)) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || buf[..n].windows(2).any(|w| w == b"\n\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, ctype, body) = if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
                ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", exposition(&sources))
            } else {
                ("404 Not Found", "text/plain", "try /metrics\n".to_string())
            };
            let resp = format!(
                "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_ds::stats::{OpKind, LATENCY_LE};
    use pnfs_ds::DsStats;
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::time::Duration;

    type Labels = BTreeMap<String, String>;
    /// One histogram series: (le, bucket value) in text order, _sum, _count.
    type Series = (Vec<(String, f64)>, Option<f64>, Option<f64>);

    /// `name{k="v",...} value` (labels optional); None if malformed.
    fn parse_sample(line: &str) -> Option<(String, Labels, f64)> {
        let name_end = line.find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == ':'))?;
        let name = &line[..name_end];
        if name.is_empty() || name.starts_with(|ch: char| ch.is_ascii_digit()) {
            return None;
        }
        let mut rest = &line[name_end..];
        let mut labels = Labels::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            loop {
                let (ki, _) = *chars.peek()?;
                if r[ki..].starts_with('}') {
                    rest = &r[ki + 1..];
                    break;
                }
                let eq = r[ki..].find("=\"")? + ki;
                let key = &r[ki..eq];
                if key.is_empty() || !key.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                    return None;
                }
                while chars.peek()?.0 < eq + 2 {
                    chars.next();
                }
                let mut val = String::new();
                loop {
                    let (_, ch) = chars.next()?;
                    match ch {
                        '"' => break,
                        '\\' => match chars.next()?.1 {
                            'n' => val.push('\n'),
                            '\\' => val.push('\\'),
                            '"' => val.push('"'),
                            _ => return None,
                        },
                        '\n' => return None,
                        ch => val.push(ch),
                    }
                }
                if labels.insert(key.to_string(), val).is_some() {
                    return None;
                }
                match chars.peek()? {
                    (_, ',') => {
                        chars.next();
                    }
                    (_, '}') => {}
                    _ => return None,
                }
            }
        }
        let value = rest.strip_prefix(' ')?;
        if value.contains(' ') {
            return None;
        }
        let v = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse::<f64>().ok()?,
        };
        Some((name.to_string(), labels, v))
    }

    /// Checks the text as OpenMetrics and returns its samples.
    fn check(text: &str, id: &str) -> Vec<(String, Labels, f64)> {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut current: Option<(String, String)> = None;
        let mut closed: HashSet<String> = HashSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(meta) = line.strip_prefix("# ") {
                let mut p = meta.splitn(3, ' ');
                let (kind, fam, arg) = (p.next().unwrap(), p.next().expect(line), p.next().unwrap_or(""));
                match kind {
                    "TYPE" => {
                        assert!(["counter", "gauge", "histogram"].contains(&arg), "{line}");
                        assert!(types.insert(fam.to_string(), arg.to_string()).is_none(), "family declared twice: {line}");
                        if let Some((f, _)) = current.take() {
                            closed.insert(f);
                        }
                        current = Some((fam.to_string(), arg.to_string()));
                    }
                    "HELP" | "UNIT" => {
                        assert_eq!(current.as_ref().map(|c| c.0.as_str()), Some(fam), "metadata outside its family: {line}");
                        if kind == "UNIT" {
                            assert!(fam.ends_with(&format!("_{arg}")), "{line}");
                        }
                    }
                    _ => panic!("unknown metadata: {line}"),
                }
                continue;
            }
            assert!(!line.starts_with('#') && !line.is_empty(), "stray line: {line:?}");
            let (name, labels, v) = parse_sample(line).unwrap_or_else(|| panic!("malformed sample: {line:?}"));
            let (fam, ty) = current.as_ref().unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
            let suffixes: &[&str] = match ty.as_str() {
                "counter" => &["_total"],
                "gauge" => &[""],
                _ => &["_bucket", "_sum", "_count"],
            };
            assert!(suffixes.iter().any(|s| name == format!("{fam}{s}")), "{name} outside family {fam} ({ty})");
            assert!(!closed.contains(fam.as_str()));
            assert_eq!(labels.get("ds").map(String::as_str), Some(id), "{line}");
            assert!(v >= 0.0, "{line}");
            if name.ends_with("_bucket") {
                assert!(labels.contains_key("le"), "{line}");
            } else {
                assert!(!labels.contains_key("le"), "{line}");
            }
            samples.push((name, labels, v));
        }
        // Histograms: per label set, buckets in le order, non-decreasing,
        // ending at +Inf equal to _count; a _sum for each.
        for (fam, ty) in &types {
            if ty != "histogram" {
                continue;
            }
            let mut series: BTreeMap<Labels, Series> = BTreeMap::new();
            for (name, labels, v) in samples.iter().filter(|(n, _, _)| n.strip_prefix(fam.as_str()).is_some_and(|s| s.starts_with('_'))) {
                let mut key = labels.clone();
                let le = key.remove("le");
                let e = series.entry(key).or_default();
                if *name == format!("{fam}_bucket") {
                    e.0.push((le.unwrap(), *v));
                } else if *name == format!("{fam}_sum") {
                    assert!(e.1.replace(*v).is_none());
                } else {
                    assert_eq!(*name, format!("{fam}_count"));
                    assert!(e.2.replace(*v).is_none());
                }
            }
            assert!(!series.is_empty());
            for (labels, (buckets, sum, count)) in series {
                let (sum, count) = (sum.expect("no _sum"), count.expect("no _count"));
                assert_eq!(buckets.last().map(|b| b.0.as_str()), Some("+Inf"), "{labels:?}");
                assert_eq!(buckets.last().unwrap().1, count, "+Inf != _count for {labels:?}");
                for w in buckets.windows(2) {
                    let (a, b) = (w[0].0.parse::<f64>().unwrap(), if w[1].0 == "+Inf" { f64::INFINITY } else { w[1].0.parse().unwrap() });
                    assert!(a < b, "le out of order for {labels:?}");
                    assert!(w[0].1 <= w[1].1, "buckets decrease for {labels:?}");
                }
                assert!(count > 0.0 || sum == 0.0);
            }
        }
        samples
    }

    fn value(samples: &[(String, Labels, f64)], name: &str, op: &str, le: Option<&str>) -> f64 {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.get("op").map(String::as_str) == Some(op) && l.get("le").map(String::as_str) == le)
            .unwrap_or_else(|| panic!("no {name} op={op} le={le:?}"))
            .2
    }

    #[test]
    fn idle_ds_renders_valid_openmetrics() {
        let text = ds_text("ds-1", &DsStats::default().snapshot());
        let samples = check(&text, "ds-1");
        assert!(!text.contains("# EOF"));
        assert_eq!(value(&samples, "pnfs_ds_op_latency_seconds_bucket", "read", Some("+Inf")), 0.0);
        assert_eq!(value(&samples, "pnfs_ds_op_latency_seconds_sum", "read", None), 0.0);
        assert_eq!(value(&samples, "pnfs_ds_op_errors_total", "write", None), 0.0);
    }

    #[test]
    fn histograms_render_cumulative_buckets() {
        let stats = DsStats::default();
        let us = Duration::from_micros;
        stats.op(OpKind::Read, true, us(3));
        stats.op(OpKind::Read, true, us(30));
        stats.op(OpKind::Read, false, us(700));
        stats.op(OpKind::Read, true, Duration::from_secs(5));
        stats.op(OpKind::Sequence, true, Duration::from_nanos(1500));
        let id = "ds \"1\"\\x";
        let text = ds_text(id, &stats.snapshot());
        let samples = check(&text, id);
        let b = |le| value(&samples, "pnfs_ds_op_latency_seconds_bucket", "read", Some(le));
        let got: Vec<f64> = LATENCY_LE.iter().map(|le| b(le)).collect();
        assert_eq!(got, [1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 4.0]);
        assert_eq!(value(&samples, "pnfs_ds_op_latency_seconds_count", "read", None), 4.0);
        assert_eq!(value(&samples, "pnfs_ds_op_latency_seconds_sum", "read", None), 5.000733);
        assert_eq!(value(&samples, "pnfs_ds_op_latency_seconds_sum", "sequence", None), 0.0000015);
        assert_eq!(value(&samples, "pnfs_ds_ops_total", "read", None), 4.0);
        assert_eq!(value(&samples, "pnfs_ds_op_errors_total", "read", None), 1.0);
        assert_eq!(value(&samples, "pnfs_ds_op_errors_total", "sequence", None), 0.0);
        assert!(text.contains("pnfs_ds_op_latency_seconds_sum{ds=\"ds \\\"1\\\"\\\\x\",op=\"read\"} 5.000733000\n"), "{text}");
    }

    #[test]
    fn exposition_has_no_blank_lines() {
        let sources: Vec<Source> = vec![
            Arc::new(|| "# TYPE a counter\na_total 1\n# TYPE b counter\n".to_string()),
            Arc::new(String::new),
            Arc::new(|| ds_text("ds1", &DsStats::default().snapshot())),
        ];
        let text = exposition(&sources);
        assert!(text.starts_with("# TYPE a counter\na_total 1\n# TYPE b counter\n# TYPE pnfs_ds_ops counter\n"), "{text}");
        assert!(text.ends_with("} 0\n# EOF\n"), "{text}");
        assert!(!text.contains("\n\n"), "{text}");
        assert_eq!(exposition(&[]), "# EOF\n");
    }

    #[test]
    fn parser_rejects_malformed_lines() {
        for bad in ["x{a=\"1\"}", "x{a=1} 2", "x{a=\"1\"} 2 3", "x 1 2", "{a=\"1\"} 2", "x{a=\"1\" 2", "x{a=\"\\q\"} 1"] {
            assert!(parse_sample(bad).is_none(), "{bad}");
        }
        assert!(parse_sample("x_total{a=\"1\",b=\"\"} 2").is_some());
    }
}
