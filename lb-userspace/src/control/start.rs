//! `lb run`: picks and starts the data plane, serves, and exits the way the
//! data plane allows (XDP keeps forwarding unless told to detach).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use log::{info, warn};
use tokio::sync::mpsc;

use super::{daemon::Daemon, host, instance, registry::Registry};
use crate::{
    config::{Config, DataplaneKind},
    dataplane::{
        proxy::{ProxyDataplane, Settings},
        xdp::{self, Sizes, XdpDataplane},
        Dataplane, Planes,
    },
    model::AdoptedIds,
    telemetry::{admin, notify},
};

/// Loads (or adopts) the XDP program, after checking what it needs.
fn load_xdp(cfg: &Config, detach_on_exit: bool) -> Result<XdpDataplane> {
    let g = &cfg.gateway;
    if g.interfaces.is_empty() {
        anyhow::bail!("gateway.interfaces is empty: no interface to attach XDP to");
    }
    host::check_host(cfg)?;
    host::check_privileges()?;
    let sizes = Sizes::from_config(cfg);
    info!(
        "map memory about {:.1} MiB (ring {} x {} slots, conntrack {} entries per family, snat {} entries)",
        sizes.memory() as f64 / (1 << 20) as f64,
        sizes.max_vips * lb_common::RINGS_PER_VIP,
        sizes.ring_size,
        sizes.conntrack,
        sizes.snat
    );
    let mut dp = XdpDataplane::load_pinned(sizes, Some(&g.pin_path))?;
    if dp.adopted {
        info!(
            "adopted the pinned maps in {} (tracked flows and counters carry on)",
            g.pin_path.display()
        );
    }
    dp.interfaces = g.interfaces.clone();
    dp.kind = g.dataplane;
    dp.detach_on_exit = detach_on_exit;
    Ok(dp)
}

/// An XDP failure under `auto` that the operator can fix: stop with it.
fn fixable(e: anyhow::Error) -> anyhow::Error {
    e.context(
        "XDP failed for a reason that can be fixed (see below), so dataplane = \"auto\" does not \
         fall back; fix it, or set gateway.dataplane = \"proxy\" to run without XDP",
    )
}

/// The proxy data plane; `tls_only` beside XDP (the TLS listeners).
fn proxy(cfg: &Config, tls_only: bool) -> Box<dyn Dataplane> {
    let g = &cfg.gateway;
    Box::new(ProxyDataplane::new(Settings {
        connect_timeout: g.proxy_connect_timeout,
        tcp_idle: g.tcp_idle_timeout,
        udp_idle: g.udp_idle_timeout,
        max_udp_sessions: g.proxy_udp_sessions as usize,
        max_vips: g.max_vips,
        max_targets: g.max_targets,
        tls_only,
    }))
}

/// The data planes to run: under `auto` native XDP, then generic XDP (in
/// attach), then the proxy only where XDP cannot run at all; every step
/// that fails says why. Returns them, what pinned maps held, and the
/// fallback's reason.
type Chosen = (Planes, AdoptedIds, Option<(&'static str, String)>);

fn choose(cfg: &Config, detach_on_exit: bool) -> Result<Chosen> {
    let kind = cfg.gateway.dataplane;
    if kind == DataplaneKind::Proxy {
        info!("data plane: proxy (gateway.dataplane = \"proxy\")");
        return Ok((Planes(vec![proxy(cfg, false)]), AdoptedIds::default(), None));
    }
    match load_xdp(cfg, detach_on_exit) {
        Ok(mut x) => {
            if let Err(e) = x.count_flows_every(Duration::from_secs(5)) {
                warn!("live flows are counted on request only: {e:#}");
            }
            let adopted = x.adopted_ids().clone();
            // TLS listeners, now or after a reload, are the proxy's.
            Ok((Planes(vec![Box::new(x), proxy(cfg, true)]), adopted, None))
        }
        Err(e) if kind == DataplaneKind::Auto => match xdp::unavailable(&e) {
            Some(why) => {
                warn!(
                    "XDP is not available ({}); falling back to the proxy data plane",
                    why.1
                );
                Ok((
                    Planes(vec![proxy(cfg, false)]),
                    AdoptedIds::default(),
                    Some(why),
                ))
            }
            None => Err(fixable(e)),
        },
        Err(e) => Err(e),
    }
}

/// Programs the planes and starts them; under `auto`, a failure is one to
/// fix, and says so.
fn start_planes(d: &mut Daemon) -> Result<()> {
    d.sync().context("programming the data plane")?;
    d.planes.start().map_err(|e| {
        if d.cfg.gateway.dataplane == DataplaneKind::Auto {
            fixable(e)
        } else {
            e
        }
    })
}

pub async fn run(config_path: PathBuf, detach_on_exit: bool) -> Result<()> {
    let mut cfg = Config::load(&config_path)?;
    super::seed::fill(&mut cfg.gateway)?;
    // One daemon per pinned state: a second would fight over the maps.
    let _lock = instance::lock(&cfg.gateway.admin_socket, &cfg.gateway.pin_path)?;
    // One started with another admin_socket holds the pin directory.
    if let Ok(instance::Holder::Held(pid)) = xdp::pins::dir_holder(&cfg.gateway.pin_path) {
        anyhow::bail!(
            "another `lb run` ({}) already serves gateway.pin_path {}",
            pid.map_or("pid unknown".into(), |p| format!("pid {p}")),
            cfg.gateway.pin_path.display()
        );
    }
    let registry = Registry::load(&cfg.gateway.state_dir)?;
    if registry.count() > 0 {
        info!(
            "{} target(s) registered at runtime, from {}",
            registry.count(),
            cfg.gateway
                .state_dir
                .join(super::registry::STATE_FILE)
                .display()
        );
    }
    let (planes, adopted, fallback) = choose(&cfg, detach_on_exit)?;
    let (tx, mut rx) = mpsc::channel(1024);
    let mut d = Daemon::new(cfg, registry, planes, adopted, tx);
    d.fallback = fallback;
    let (admin_tx, mut admin_rx) = mpsc::channel(16);
    let signals = super::daemon::Signals::install()?;
    // Whatever fails before serving takes down what this start set up (an
    // earlier run's pinned state stays as it was).
    if let Err(e) = start(&mut d, &mut rx, admin_tx).await {
        d.planes.undo_start();
        return Err(e);
    }
    let healthy = d.targets.in_service();
    info!(
        "serving {} listener keys, {} targets ({healthy} healthy), zone {:?}",
        d.model.vips.len(),
        d.model.backends.len(),
        d.model.zone
    );
    let mode = d
        .planes
        .modes()
        .first()
        .map(|(_, m)| m.clone())
        .unwrap_or_default();
    let _ = notify::notify(&format!(
        "READY=1\nSTATUS=serving {} listener keys, {healthy} healthy targets ({mode})",
        d.model.vips.len()
    ));
    d.start_serving();
    d.reconcile_vip_routes().await;
    d.take_sample();
    d.serve(&config_path, &mut rx, &mut admin_rx, signals)
        .await?;
    shutdown(d).await
}

/// The announcer's device (a clash stops the start before anything is
/// attached; routes come once the data plane forwards), the first health
/// results, the admin endpoints, then the data planes.
async fn start(
    d: &mut Daemon,
    rx: &mut mpsc::Receiver<crate::health::CheckResult>,
    admin_tx: mpsc::Sender<admin::AdminReq>,
) -> Result<()> {
    d.update_announcer().await?;
    d.first_round(rx).await;
    let g = &d.cfg.gateway;
    if !g.metrics_address.is_empty() {
        let addr = g
            .metrics_address
            .parse()
            .context("gateway.metrics_address")?;
        admin::serve_metrics(addr, admin_tx.clone()).await?;
    }
    admin::serve_status(&g.admin_socket, admin_tx).await?;
    start_planes(d)
}

/// Withdrawn first: upstream routers move the traffic to other gateways
/// while this one still forwards what arrives meanwhile. XDP stays attached
/// after the exit; the proxy (or XDP with --detach-on-exit) keeps serving
/// for `withdraw_grace` so that nothing is refused while the routers
/// converge.
async fn shutdown(mut d: Daemon) -> Result<()> {
    let _ = notify::notify("STOPPING=1");
    if let Some(a) = d.announcer.take() {
        let grace = a.cfg.withdraw_grace;
        a.shutdown().await;
        if d.planes.ends_with_process() && !grace.is_zero() {
            info!("announce: serving {grace:?} more while routers move the traffic (announce.withdraw_grace)");
            tokio::time::sleep(grace).await;
        }
    }
    let _ = std::fs::remove_file(&d.cfg.gateway.admin_socket);
    // They go with the program; a program that stays keeps them.
    if let Some(r) = d.vip_routes.take().filter(|_| !d.planes.stays_after_exit()) {
        match r.remove_all().await {
            Ok(n) => info!("vip route: removed {n} unreachable route(s)"),
            Err(e) => warn!("vip route: {e:#}"),
        }
    }
    for m in d.planes.exit()? {
        info!("{m}");
    }
    Ok(())
}
