//! What pnfsctl prints: text for people, or JSON (`--json`, one document
//! per command, the same fields under stable names).

use pnfs_protocol::mds_ds::uaddr;
use pnfs_protocol::wire::*;
use serde_json::{json, Value};
use std::io::{self, Write};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Bytes for people: 1.5 GiB.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn state_name(s: adm_ds_state) -> &'static str {
    match s {
        adm_ds_state::ADM_DS_ACTIVE => "active",
        adm_ds_state::ADM_DS_DRAINING => "draining",
        adm_ds_state::ADM_DS_REMOVED => "removed",
        adm_ds_state::ADM_DS_LOST => "lost",
    }
}

/// A universal address as host:port (as registered when it is not one).
fn addr(a: &netaddr4) -> String {
    let u = text(&a.na_r_addr);
    uaddr::parse(&u).map(|s| s.to_string()).unwrap_or(u)
}

fn write_json(out: &mut dyn Write, v: &Value) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)
}

fn progress_json(p: &[adm_progress]) -> Value {
    match p.first() {
        None => Value::Null,
        Some(p) => json!({
            "objects_done": p.ap_objects_done, "objects_total": p.ap_objects_total,
            "bytes_done": p.ap_bytes_done, "bytes_total": p.ap_bytes_total,
        }),
    }
}

fn progress_text(p: &[adm_progress]) -> String {
    match p.first() {
        None => "none".into(),
        Some(p) => format!(
            "{} of {} objects, {} of {}",
            p.ap_objects_done,
            p.ap_objects_total,
            size(p.ap_bytes_done),
            size(p.ap_bytes_total)
        ),
    }
}

pub fn status(r: &adm_status_res, json: bool, out: &mut dyn Write) -> io::Result<()> {
    if json {
        let nodes: Vec<Value> = r
            .asr_nodes
            .iter()
            .map(|n| {
                json!({"node_id": n.ani_node_id, "peer": text(&n.ani_peer), "live": n.ani_live,
                       "epoch": n.ani_epoch, "answering": n.ani_answering})
            })
            .collect();
        return write_json(
            out,
            &json!({
                "node_id": r.asr_node_id,
                "nodes": nodes,
                "data_servers": {
                    "known": r.asr_ds_known, "up": r.asr_ds_up, "down": r.asr_ds_down, "active": r.asr_ds_active,
                    "draining": r.asr_ds_draining, "lost": r.asr_ds_lost, "removed": r.asr_ds_removed,
                },
                "capacity_bytes": r.asr_capacity_bytes,
                "free_bytes": r.asr_free_bytes,
                "files": r.asr_files,
                "placed_files": r.asr_placed_files,
                "resilver": progress_json(&r.asr_resilver),
                "rebalance": progress_json(&r.asr_rebalance),
                "message": text(&r.asr_message),
            }),
        );
    }
    if r.asr_nodes.is_empty() {
        writeln!(out, "mds:          single node")?;
    } else {
        let live = r.asr_nodes.iter().filter(|n| n.ani_live).count();
        writeln!(out, "mds:          cluster of {} nodes, {live} live; node {} answered", r.asr_nodes.len(), r.asr_node_id)?;
        for n in &r.asr_nodes {
            let state = if n.ani_live { format!("live (epoch {:#x})", n.ani_epoch) } else { "DOWN".into() };
            writeln!(out, "  node {:<3} {:<22} {state}", n.ani_node_id, text(&n.ani_peer))?;
        }
    }
    writeln!(
        out,
        "data servers: {} known: {} up, {} down; {} active, {} draining, {} lost, {} removed",
        r.asr_ds_known, r.asr_ds_up, r.asr_ds_down, r.asr_ds_active, r.asr_ds_draining, r.asr_ds_lost, r.asr_ds_removed
    )?;
    let used = r.asr_capacity_bytes.saturating_sub(r.asr_free_bytes);
    writeln!(
        out,
        "capacity:     {} on live data servers, {} used, {} free",
        size(r.asr_capacity_bytes),
        size(used),
        size(r.asr_free_bytes)
    )?;
    writeln!(out, "files:        {} inodes, {} files with objects on data servers", r.asr_files, r.asr_placed_files)?;
    writeln!(out, "resilver:     {}", progress_text(&r.asr_resilver))?;
    writeln!(out, "rebalance:    {}", progress_text(&r.asr_rebalance))
}

fn ds_json(d: &adm_ds_info) -> Value {
    json!({
        "index": d.adi_index,
        "id": text(&d.adi_id),
        "state": state_name(d.adi_state),
        "registered": d.adi_registered,
        "alive": d.adi_alive,
        "heartbeat_age_ms": if d.adi_registered { json!(d.adi_heartbeat_age_ms) } else { Value::Null },
        "capacity_bytes": d.adi_capacity_bytes,
        "free_bytes": d.adi_free_bytes,
        "used_bytes": d.adi_capacity_bytes.saturating_sub(d.adi_free_bytes),
        "objects": if d.adi_objects_counted { json!(d.adi_objects) } else { Value::Null },
        "client_addrs": d.adi_client_addrs.iter().map(addr).collect::<Vec<_>>(),
        "control_addr": text(&d.adi_control_addr),
    })
}

/// A header, then one table row per data server.
fn ds_rows(ds: &[adm_ds_info], out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{:<5} {:<14} {:<9} {:<5} {:<10} {:>10} {:>10} {:>8}  {:<22} CONTROL",
        "INDEX", "ID", "STATE", "ALIVE", "HEARTBEAT", "USED", "FREE", "OBJECTS", "ADDRESSES"
    )?;
    for d in ds {
        let heartbeat = if d.adi_registered { format!("{:.1}s ago", d.adi_heartbeat_age_ms as f64 / 1000.0) } else { "never".into() };
        let objects = if d.adi_objects_counted { d.adi_objects.to_string() } else { "-".into() };
        let addrs: Vec<String> = d.adi_client_addrs.iter().map(addr).collect();
        writeln!(
            out,
            "{:<5} {:<14} {:<9} {:<5} {:<10} {:>10} {:>10} {:>8}  {:<22} {}",
            d.adi_index,
            text(&d.adi_id),
            state_name(d.adi_state),
            if d.adi_alive { "yes" } else { "NO" },
            heartbeat,
            size(d.adi_capacity_bytes.saturating_sub(d.adi_free_bytes)),
            size(d.adi_free_bytes),
            objects,
            addrs.join(","),
            text(&d.adi_control_addr)
        )?;
    }
    Ok(())
}

pub fn ds_list(r: &adm_ds_list_res, json: bool, out: &mut dyn Write) -> io::Result<()> {
    if json {
        let ds: Vec<Value> = r.adr_ds.iter().map(ds_json).collect();
        return write_json(out, &json!({"data_servers": ds, "message": text(&r.adr_message)}));
    }
    if r.adr_ds.is_empty() {
        writeln!(out, "no data server has registered with this MDS (ds.mds_control on each data server names it)")?;
    } else {
        ds_rows(&r.adr_ds, out)?;
    }
    if !r.adr_message.is_empty() {
        writeln!(out, "note: {}", text(&r.adr_message))?;
    }
    Ok(())
}

pub fn ds_changed(r: &adm_ds_state_res, json: bool, out: &mut dyn Write) -> io::Result<()> {
    if json {
        let d = r.ads_ds.first().map_or(Value::Null, ds_json);
        return write_json(out, &json!({"message": text(&r.ads_message), "data_server": d}));
    }
    writeln!(out, "{}", text(&r.ads_message))?;
    if !r.ads_ds.is_empty() {
        ds_rows(&r.ads_ds, out)?;
    }
    Ok(())
}

fn kind_name(k: adm_layout_kind) -> &'static str {
    match k {
        adm_layout_kind::ADM_LAYOUT_NONE => "none",
        adm_layout_kind::ADM_LAYOUT_FILES => "files",
        adm_layout_kind::ADM_LAYOUT_FLEX => "flexfiles",
    }
}

fn object_json(o: &adm_object) -> Value {
    json!({
        "stripe": o.ao_stripe, "ds_index": o.ao_ds_index, "ds_id": text(&o.ao_ds_id),
        "size": if o.ao_found { json!(o.ao_size) } else { Value::Null },
        "space_used": if o.ao_found { json!(o.ao_space_used) } else { Value::Null },
        "error": if o.ao_found { Value::Null } else { json!(text(&o.ao_error)) },
    })
}

pub fn layout(path: &str, r: &adm_layout_res, json: bool, out: &mut dyn Write) -> io::Result<()> {
    if json {
        let segments: Vec<Value> = r
            .alr_segments
            .iter()
            .map(|s| {
                let mirrors: Vec<Value> = s.asg_mirrors.iter().map(|m| Value::Array(m.am_stripes.iter().map(object_json).collect())).collect();
                json!({"offset": s.asg_offset, "length": s.asg_length, "stripe_unit": s.asg_stripe_unit,
                       "first_stripe": s.asg_first_stripe, "mirrors": mirrors})
            })
            .collect();
        return write_json(
            out,
            &json!({
                "path": path, "ino": r.alr_ino, "size": r.alr_size, "kind": kind_name(r.alr_kind),
                "policy": text(&r.alr_policy), "segments": segments, "more_segments": r.alr_more_segments,
                "message": text(&r.alr_message),
            }),
        );
    }
    writeln!(out, "{path}: inode {}, {} ({} bytes)", r.alr_ino, size(r.alr_size), r.alr_size)?;
    if r.alr_kind == adm_layout_kind::ADM_LAYOUT_NONE {
        return writeln!(out, "layout: none: {}", text(&r.alr_message));
    }
    writeln!(out, "layout: {} (policy {})", kind_name(r.alr_kind), text(&r.alr_policy))?;
    for s in &r.alr_segments {
        let end = if s.asg_length == 0 { "end".to_string() } else { (s.asg_offset + s.asg_length).to_string() };
        writeln!(
            out,
            "segment {}..{end}: stripe unit {}, {} stripe(s), first stripe {}",
            s.asg_offset,
            size(s.asg_stripe_unit as u64),
            s.asg_mirrors.first().map_or(0, |m| m.am_stripes.len()),
            s.asg_first_stripe
        )?;
        for (i, m) in s.asg_mirrors.iter().enumerate() {
            if s.asg_mirrors.len() > 1 {
                writeln!(out, "  mirror {i}:")?;
            }
            for o in &m.am_stripes {
                let what = if o.ao_found {
                    format!("{} ({} bytes, {} used)", size(o.ao_size), o.ao_size, size(o.ao_space_used))
                } else {
                    format!("unknown: {}", text(&o.ao_error))
                };
                writeln!(out, "    stripe {:<3} data server {} ({}): {what}", o.ao_stripe, o.ao_ds_index, text(&o.ao_ds_id))?;
            }
        }
    }
    if r.alr_more_segments {
        writeln!(out, "(more segments than shown)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }
}
