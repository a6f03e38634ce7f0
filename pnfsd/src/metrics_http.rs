//! `GET /metrics`: the OpenMetrics text of every role running in this
//! process, on `node.metrics_bind`. A deliberately tiny HTTP/1.0 responder:
//! one request per connection, bounded request size, no keep-alive.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub type Source = Arc<dyn Fn() -> String + Send + Sync>;

/// The data server's counters in OpenMetrics text.
pub fn ds_text(id: &str, s: &pnfs_ds::DsStatsSnapshot) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(t, "# TYPE pnfs_ds_ops counter\n# HELP pnfs_ds_ops NFS operations executed by the data server.");
    for (op, n) in &s.ops {
        let _ = writeln!(t, "pnfs_ds_ops_total{{ds=\"{id}\",op=\"{op}\"}} {n}");
    }
    let counters: [(&str, &str, u64); 8] = [
        ("compounds", "COMPOUNDs executed (replays included)", s.compounds),
        ("replays", "COMPOUNDs answered from the reply cache", s.replays),
        ("read_bytes", "READ payload bytes sent to clients", s.bytes_read),
        ("write_bytes", "WRITE payload bytes received from clients", s.bytes_written),
        ("payload_copies", "userspace copies of READ/WRITE payloads", s.payload_copies),
        ("buffer_pool_exhausted", "requests refused because a reactor buffer pool was empty", s.buffer_pool_exhausted),
        ("control_calls", "control-protocol calls served", s.control_calls),
        ("connections_accepted", "client connections accepted", s.connections_accepted),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(t, "# TYPE pnfs_ds_{name} counter\n# HELP pnfs_ds_{name} {help}.\npnfs_ds_{name}_total{{ds=\"{id}\"}} {v}");
    }
    t.trim_end().to_string()
}

const MAX_REQUEST: usize = 8192;

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
                let mut text = String::new();
                for s in sources.iter() {
                    let t = s();
                    if !t.is_empty() {
                        text.push_str(&t);
                        text.push('\n');
                    }
                }
                text.push_str("# EOF\n");
                ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", text)
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
