//! `lb run`: load, attach, program the maps, reload on SIGHUP, detach on exit.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use log::{error, info, warn};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    config::{Config, DataplaneKind},
    model::{Ids, ListenerKey, Model, TargetKey},
    xdp::{Sizes, XdpDataplane},
};

/// Capabilities needed to load and attach XDP programs.
pub fn check_privileges() -> Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |c: u32| eff & (1u64 << c) != 0;
    if !has(CAP_NET_ADMIN) || !(has(CAP_BPF) || has(CAP_SYS_ADMIN)) {
        bail!(
            "lb run needs root, or the capabilities CAP_BPF and CAP_NET_ADMIN \
             (e.g. `setcap cap_bpf,cap_net_admin,cap_perfmon+ep lb` or AmbientCapabilities= in the systemd unit); \
             effective capabilities are {eff:#x}"
        );
    }
    Ok(())
}

pub fn load_config(path: &Path) -> Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Config::parse(&text).map_err(|e| anyhow::anyhow!("{}: invalid config:\n{e}", path.display()))
}

struct State {
    cfg: Config,
    vip_ids: Ids<ListenerKey>,
    backend_ids: Ids<TargetKey>,
    model: Model,
}

impl State {
    fn new(cfg: Config) -> State {
        let mut vip_ids = Ids::new(0);
        let mut backend_ids = Ids::new(1);
        let model = Model::build(&cfg, &mut vip_ids, &mut backend_ids);
        State {
            cfg,
            vip_ids,
            backend_ids,
            model,
        }
    }
}

fn sync(dp: &mut XdpDataplane, st: &State) -> Result<()> {
    // Health checking arrives with the control plane; until then every
    // registered target takes traffic.
    let healthy: HashMap<u32, bool> = st.model.backends.keys().map(|&id| (id, true)).collect();
    let h = |id: u32| healthy.get(&id).copied().unwrap_or(false);
    dp.sync(&st.model, &h, &h)
}

pub async fn run(config_path: PathBuf) -> Result<()> {
    let cfg = load_config(&config_path)?;
    if cfg.gateway.dataplane == DataplaneKind::Proxy {
        bail!("gateway.dataplane = \"proxy\" is not available yet in this build; use \"auto\", \"xdp\" or \"xdp-generic\"");
    }
    if cfg.gateway.interfaces.is_empty() {
        bail!("gateway.interfaces: no interface to attach to");
    }
    check_privileges()?;
    let sizes = Sizes::from_config(&cfg);
    info!(
        "map memory about {:.1} MiB (ring {} x {} slots, conntrack {} entries, snat {} entries)",
        sizes.memory() as f64 / (1 << 20) as f64,
        sizes.max_vips * lb_common::RINGS_PER_VIP,
        sizes.ring_size,
        sizes.conntrack,
        sizes.snat
    );
    let mut dp = XdpDataplane::load(sizes)?;
    let mut st = State::new(cfg);
    sync(&mut dp, &st).context("programming the maps")?;
    for iface in st.cfg.gateway.interfaces.clone() {
        dp.attach(&iface, st.cfg.gateway.dataplane)?;
    }
    info!(
        "serving {} listener keys, {} targets, zone {:?}",
        st.model.vips.len(),
        st.model.backends.len(),
        st.model.zone
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: detaching and exiting"); break; }
            _ = int.recv() => { info!("SIGINT: detaching and exiting"); break; }
            _ = hup.recv() => {
                match load_config(&config_path) {
                    Err(e) => error!("reload failed, keeping the running config: {e:#}"),
                    Ok(new) => {
                        if new.gateway.ring_size != st.cfg.gateway.ring_size
                            || new.gateway.interfaces != st.cfg.gateway.interfaces
                        {
                            warn!("gateway.ring_size / gateway.interfaces changes need a restart; ignored");
                        }
                        let model = Model::build(&new, &mut st.vip_ids, &mut st.backend_ids);
                        let next = State { cfg: new, vip_ids: st.vip_ids.clone(), backend_ids: st.backend_ids.clone(), model };
                        match sync(&mut dp, &next) {
                            Ok(()) => { st = next; info!("config reloaded"); }
                            Err(e) => error!("reload failed while programming maps: {e:#}"),
                        }
                    }
                }
            }
        }
    }
    drop(dp);
    Ok(())
}
