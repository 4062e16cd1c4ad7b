//! `lb explain` and `lb flows`: what the data path would do with a new
//! flow, computed with the same `lb_common::select` code and rings, and
//! the flows it tracks, from a bounded batched walk of conntrack.

use std::{collections::HashMap, net::SocketAddr};

use lb_common::{
    flow,
    select::{flow_key_hash, pick_avoiding},
    FlowKey, PROTO_TCP, PROTO_UDP, VIP_F_CROSS_ZONE, VIP_F_STICKY,
};
use serde_json::{json, Value};

use crate::{
    dataplane::xdp::ctwalk,
    model::{addr_words, words_addr, Desired},
    telemetry::elbv2::{matches, ApiError, ExplainRequest, FlowsRequest},
};

fn proto_of(s: &str) -> Result<u8, ApiError> {
    match s {
        "tcp" => Ok(PROTO_TCP),
        "udp" => Ok(PROTO_UDP),
        _ => Err(ApiError::new(
            "ValidationError",
            format!("protocol {s:?}: tcp or udp"),
        )),
    }
}

/// The pick for a new flow `r` under `d`; `suspect(id)`: passive health
/// has the target out of new flows (as the program checks it).
pub fn explain(
    d: &Desired,
    r: &ExplainRequest,
    suspect: &dyn Fn(u32) -> bool,
) -> Result<Value, ApiError> {
    let proto = proto_of(&r.protocol)?;
    let (vaddr, _) = addr_words(r.vip.ip());
    let Some((v, rings)) = d.vips().find(|(v, _)| {
        v.key.addr == vaddr && u16::from_be(v.key.port) == r.vip.port() && v.key.proto == proto
    }) else {
        return Err(ApiError::new(
            "ListenerNotFound",
            format!("no {} listener on {}", r.protocol, r.vip),
        ));
    };
    let (src, _) = addr_words(r.client.ip());
    let h = flow_key_hash(
        d.model.globals.hash_key,
        v.flags,
        &src,
        &vaddr,
        r.client.port().to_be(),
        r.vip.port().to_be(),
        proto,
    );
    let m = d.model.globals.ring_size;
    let slot = h % m.max(1);
    let zone_pick = rings.zone.get(slot as usize).copied().unwrap_or(0);
    let cross = v.flags & VIP_F_CROSS_ZONE != 0;
    let ring = if !cross && zone_pick != 0 {
        "zone"
    } else {
        "all zones"
    };
    let (id, last_resort) = pick_avoiding(
        v.flags,
        m,
        h,
        |i| rings.zone.get(i as usize).copied().unwrap_or(0),
        |i| rings.all.get(i as usize).copied().unwrap_or(0),
        suspect,
    );
    let first = lb_common::select::pick(
        v.flags,
        m,
        h,
        |i| rings.zone.get(i as usize).copied().unwrap_or(0),
        |i| rings.all.get(i as usize).copied().unwrap_or(0),
    );
    let name = |id: u32| {
        d.model
            .backends
            .get(&id)
            .map(|b| SocketAddr::new(b.key.address, b.key.port).to_string())
    };
    let mut why = vec![format!(
        "{} hash {h:#010x}, slot {slot} of {m}",
        if v.flags & VIP_F_STICKY != 0 {
            "source-IP (stickiness)"
        } else {
            "5-tuple"
        }
    )];
    why.push(match (cross, ring) {
        (true, _) => "cross_zone: the all-zones ring".to_string(),
        (false, "zone") => format!("the ring of this gateway's zone {:?}", d.model.zone),
        _ => format!(
            "zone {:?} has no target for this slot (none healthy enough): the all-zones ring",
            d.model.zone
        ),
    });
    if id != first && id != 0 {
        why.push(format!(
            "{} is suspect (passive health): a later slot's target",
            name(first).unwrap_or_default()
        ));
    }
    if last_resort {
        why.push("every target tried is suspect: the first pick, as a last resort".into());
    }
    if let Some((h, n)) = d.failed_open.get(&v.target_group) {
        why.push(format!(
            "target group {} fails open ({h} of {n} healthy): all its targets are in the rings",
            v.target_group
        ));
    }
    if id == 0 {
        return Ok(json!({
            "Listener": v.listener,
            "TargetGroup": v.target_group,
            "Target": Value::Null,
            "Why": why,
            "Outcome": "dropped: no target in any ring (no_backend)",
        }));
    }
    Ok(json!({
        "Listener": v.listener,
        "TargetGroup": v.target_group,
        "Target": name(id),
        "Ring": ring,
        "Hash": h,
        "Slot": slot,
        "Why": why,
    }))
}

/// What a walk of conntrack needs from the daemon (taken on the main
/// loop; the walk runs off it).
pub struct FlowsJob {
    pub tables: ctwalk::FlowTables,
    pub globals: lb_common::Globals,
    /// Backend id -> target, vip_id -> listener.
    pub targets: HashMap<u32, (String, SocketAddr)>,
    pub listeners: HashMap<u32, String>,
}

/// The tracked flows matching `r`, live ones only.
pub fn flows(job: &FlowsJob, r: &FlowsRequest) -> Result<Value, ApiError> {
    let limit = r.limit.unwrap_or(1000).min(100_000);
    let now = ctwalk::coarse_now_ns();
    let mut out = Vec::new();
    let mut seen = 0usize;
    let mut more = false;
    job.tables.for_each(|k: &FlowKey, st| {
        let idle = now.saturating_sub(st.last_seen_ns);
        if !flow::live(&job.globals, k.proto, st.idle_timeout_s, st.flags, idle) {
            return;
        }
        seen += 1;
        let client = SocketAddr::new(words_addr(&k.src, k.family), u16::from_be(k.sport));
        let vip = SocketAddr::new(words_addr(&k.dst, k.family), u16::from_be(k.dport));
        let target = job.targets.get(&st.backend_id);
        let keep = matches(&r.client, client.ip(), client.port())
            && matches(&r.vip, vip.ip(), vip.port())
            && target.is_some_and(|(_, t)| matches(&r.target, t.ip(), t.port()));
        if !keep {
            return;
        }
        if out.len() >= limit {
            more = true;
            return;
        }
        let state = match st.flags {
            f if f & lb_common::FLOW_F_CLOSING != 0 => "closing",
            f if f & lb_common::FLOW_F_REFUSED != 0 => "refused (redispatch)",
            f if f & lb_common::FLOW_F_OPENING != 0 => "opening",
            _ => "established",
        };
        out.push(json!({
            "Client": client.to_string(),
            "Vip": vip.to_string(),
            "Protocol": if k.proto == PROTO_TCP { "tcp" } else { "udp" },
            "Listener": job.listeners.get(&st.vip_id),
            "TargetGroup": target.map(|t| t.0.clone()),
            "Target": target.map(|t| t.1.to_string()),
            "IdleMs": idle / 1_000_000,
            "IdleTimeoutS": flow::timeout_ns(&job.globals, k.proto, st.idle_timeout_s, st.flags) / flow::NS,
            "State": if k.proto == PROTO_TCP { state } else { "udp" },
            "SnatPort": (st.snat_port != 0).then(|| u16::from_be(st.snat_port)),
        }));
    })
    .map_err(|e| ApiError::new("InternalFailure", format!("walking conntrack: {e}")))?;
    Ok(json!({ "Flows": out, "LiveFlows": seen, "Truncated": more }))
}
