//! Targets registered at runtime (`lb targets register`, the API's
//! `RegisterTargets`): kept in `gateway.state_dir/targets.json`, written
//! atomically, and merged with the config file's targets on start and on
//! every reload. Where both name a target (group, address, port), the
//! config's entry wins (its zone and weight), and the config's targets
//! cannot be deregistered through the API (edit the file). Target group
//! and listener attributes modified at runtime (`ModifyTargetGroupAttributes`,
//! `ModifyListenerAttributes`) are kept in the same file and override the
//! config file's values until reset.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, Port, Target, TargetGroup},
    telemetry::elbv2::{group_name, ApiError, Owner, TargetDescription},
};

pub const STATE_FILE: &str = "targets.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// By target group name, in registration order.
    pub target_groups: BTreeMap<String, Vec<Target>>,
    /// Attributes set at runtime, by target group name (NLB's keys).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, BTreeMap<String, String>>,
    /// Listener attributes set at runtime, by listener name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub listener_attributes: BTreeMap<String, BTreeMap<String, String>>,
}

fn same(a: &Target, addr: IpAddr, port: u16) -> bool {
    a.address == addr && a.port.0 == port
}

impl Registry {
    /// The registry in `dir` (empty when there is none yet). A file that
    /// cannot be read is an error: starting without it would drop targets.
    pub fn load(dir: &Path) -> Result<Registry> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Registry::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a registered-targets file ({}); fix or remove it (its targets are then no longer registered)",
                path.display(),
                "written by `lb targets register`"
            )
        })
    }

    /// Writes the registry to `dir` atomically (a temporary file, synced,
    /// renamed over the old one): a crash leaves the old or the new file.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating gateway.state_dir {}", dir.display()))?;
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("writing {} (gateway.state_dir)", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(path)
    }

    pub fn count(&self) -> usize {
        self.target_groups.values().map(Vec::len).sum()
    }

    /// The config with the registered targets added to their groups (those
    /// the config names itself are left as the config has them), and what
    /// could not be placed (groups the config no longer has).
    pub fn merged(&self, file: &Config) -> (Config, Vec<String>) {
        let mut cfg = file.clone();
        let mut warnings = Vec::new();
        for (group, targets) in &self.target_groups {
            let Some(tg) = cfg.target_groups.iter_mut().find(|t| &t.name == group) else {
                warnings.push(format!(
                    "{} registered target(s) of target group {group:?}, which the config no longer has: kept in the state file, not served",
                    targets.len()
                ));
                continue;
            };
            for t in targets {
                if !tg.targets.iter().any(|c| same(c, t.address, t.port.0)) {
                    tg.targets.push(t.clone());
                }
            }
        }
        let groups = (self.attributes.iter()).map(|(g, a)| (Owner::Group(g.clone()), a));
        let listeners =
            (self.listener_attributes.iter()).map(|(l, a)| (Owner::Listener(l.clone()), a));
        for (owner, attrs) in groups.chain(listeners) {
            for (k, v) in attrs {
                match super::attributes::apply(&mut cfg, &owner, k, v) {
                    Ok(true) => {}
                    Ok(false) => {
                        warnings.push(format!(
                            "attributes set at runtime for {owner}, which the config no longer has: kept in the state file, not applied"
                        ));
                        break;
                    }
                    Err(e) => warnings.push(format!("{owner}: runtime attribute {e}: not applied")),
                }
            }
        }
        (cfg, warnings)
    }

    /// The runtime attributes of `owner`.
    pub fn attributes_of(&self, owner: &Owner) -> Option<&BTreeMap<String, String>> {
        match owner {
            Owner::Group(g) => self.attributes.get(g),
            Owner::Listener(l) => self.listener_attributes.get(l),
        }
    }

    /// This registry with `attrs` set on `owner` (`reset`: the keys'
    /// overrides removed, back to the config file's values).
    pub fn modify(
        &self,
        file: &Config,
        owner: &Owner,
        attrs: &[(String, String)],
        reset: bool,
    ) -> Result<Registry, ApiError> {
        let bad = |e: String| ApiError::new("InvalidConfigurationRequest", e);
        match owner {
            Owner::Group(g) => {
                group_of(file, g)?;
            }
            Owner::Listener(l) if !file.listeners.iter().any(|x| &x.name == l) => {
                return Err(ApiError::listener_not_found(l))
            }
            Owner::Listener(_) => {}
        }
        let mut scratch = file.clone();
        let mut next = self.clone();
        let (map, name) = match owner {
            Owner::Group(g) => (&mut next.attributes, g),
            Owner::Listener(l) => (&mut next.listener_attributes, l),
        };
        let over = map.entry(name.to_string()).or_default();
        for (k, v) in attrs {
            if reset {
                if !super::attributes::keys_of(owner).contains(&k.as_str()) {
                    return Err(bad(format!("{k}: not an attribute of a {owner} here")));
                }
                over.remove(k);
            } else {
                super::attributes::apply(&mut scratch, owner, k, v).map_err(bad)?;
                over.insert(k.clone(), v.clone());
            }
        }
        if over.is_empty() {
            map.remove(name);
        }
        next.valid_with(file, "InvalidConfigurationRequest")
    }

    /// This registry, if the config with it validates; else the first
    /// error, as `code`.
    fn valid_with(self, file: &Config, code: &str) -> Result<Registry, ApiError> {
        let (merged, _) = self.merged(file);
        match merged.validate().into_iter().next() {
            Some(e) => Err(ApiError::new(code, e.to_string())),
            None => Ok(self),
        }
    }

    /// This registry with `targets` registered in `arn`'s group; already
    /// registered ones (here or in the config) are left as they are, as
    /// elbv2 does.
    pub fn register(
        &self,
        file: &Config,
        arn: &str,
        targets: &[TargetDescription],
    ) -> Result<Registry, ApiError> {
        let group = group_name(arn);
        let tg = group_of(file, group)?;
        let mut next = self.clone();
        let list = next.target_groups.entry(group.to_string()).or_default();
        for d in targets {
            let t = target_of(tg, d)?;
            let in_file = tg.targets.iter().any(|c| same(c, t.address, t.port.0));
            let known = list.iter().any(|c| same(c, t.address, t.port.0));
            if !in_file && !known {
                list.push(t);
            }
        }
        next.valid_with(file, "ValidationError")
    }

    /// This registry without `targets`; each must be registered here.
    pub fn deregister(
        &self,
        file: &Config,
        arn: &str,
        targets: &[TargetDescription],
    ) -> Result<Registry, ApiError> {
        let group = group_name(arn);
        let tg = group_of(file, group)?;
        let mut next = self.clone();
        let list = next.target_groups.entry(group.to_string()).or_default();
        for d in targets {
            let addr = d.address()?;
            let port = port_of(tg, d)?;
            if tg.targets.iter().any(|c| same(c, addr, port)) {
                return Err(ApiError::new(
                    "InvalidTarget",
                    format!(
                        "{} is in the config file's target group {group:?}: remove it there and reload",
                        std::net::SocketAddr::new(addr, port)
                    ),
                ));
            }
            let Some(i) = list.iter().position(|c| same(c, addr, port)) else {
                return Err(ApiError::new(
                    "InvalidTarget",
                    format!(
                        "{} is not registered in target group {group:?}",
                        std::net::SocketAddr::new(addr, port)
                    ),
                ));
            };
            list.remove(i);
        }
        if list.is_empty() {
            next.target_groups.remove(group);
        }
        Ok(next)
    }
}

fn group_of<'a>(file: &'a Config, group: &str) -> Result<&'a TargetGroup, ApiError> {
    file.target_groups
        .iter()
        .find(|t| t.name == group)
        .ok_or_else(|| ApiError::not_found(group))
}

/// The port of a request's target: its own, else the group's targets'
/// one port (elbv2 takes the group's port when a target gives none).
fn port_of(tg: &TargetGroup, d: &TargetDescription) -> Result<u16, ApiError> {
    if let Some(p) = d.port {
        if p == 0 {
            return Err(ApiError::new(
                "InvalidTarget",
                format!("target {}: port 0", d.id),
            ));
        }
        return Ok(p);
    }
    let mut ports = tg.targets.iter().map(|t| t.port.0);
    match (
        ports.next(),
        ports.all(|p| Some(p) == tg.targets.first().map(|t| t.port.0)),
    ) {
        (Some(p), true) => Ok(p),
        _ => Err(ApiError::new(
            "ValidationError",
            format!(
                "target {}: no Port, and target group {:?} has no single port to default to",
                d.id, tg.name
            ),
        )),
    }
}

fn target_of(tg: &TargetGroup, d: &TargetDescription) -> Result<Target, ApiError> {
    let address = d.address()?;
    let port = port_of(tg, d)?;
    if let Some(other) = tg.targets.first() {
        if other.address.is_ipv4() != address.is_ipv4() {
            return Err(ApiError::new(
                "InvalidTarget",
                format!(
                    "target {address}: target group {:?} holds IPv{} targets",
                    tg.name,
                    if other.address.is_ipv4() { 4 } else { 6 }
                ),
            ));
        }
    }
    Ok(Target {
        address,
        port: Port(port),
        zone: d
            .availability_zone
            .clone()
            .unwrap_or_else(|| "default".into()),
        weight: d.weight.unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[gateway]
interfaces = ["eth0"]
zone = "a"
max_targets = 4

[[listener]]
name = "web"
address = "10.100.0.1"
port = 80
protocol = "tcp"
target_group = "web"

[[target_group]]
name = "web"
[[target_group.targets]]
address = "10.1.0.11"
port = 8080
zone = "a"
"#;

    fn t(id: &str, port: u16) -> TargetDescription {
        TargetDescription {
            id: id.into(),
            port: Some(port),
            availability_zone: Some("b".into()),
            weight: None,
        }
    }

    #[test]
    fn register_merge_deregister() {
        let file = Config::parse(FILE).unwrap();
        let r = Registry::default()
            .register(&file, "web", &[t("10.1.0.21", 8080), t("10.1.0.21", 8080)])
            .unwrap();
        assert_eq!(r.count(), 1, "a duplicate registers once");
        let again = r.register(&file, "web", &[t("10.1.0.11", 8080)]).unwrap();
        assert_eq!(again, r, "the config's target: already registered");
        let (merged, w) = r.merged(&file);
        assert!(w.is_empty());
        let ts = &merged.target_groups[0].targets;
        assert_eq!(ts.len(), 2);
        assert_eq!((ts[1].zone.as_str(), ts[1].weight), ("b", 1));
        let e = r
            .deregister(&file, "web", &[t("10.1.0.11", 8080)])
            .unwrap_err();
        assert_eq!(e.code, "InvalidTarget");
        assert!(e.message.contains("config file"), "{e}");
        let e = r
            .deregister(&file, "web", &[t("10.1.0.99", 8080)])
            .unwrap_err();
        assert!(e.message.contains("not registered"), "{e}");
        let none = r.deregister(&file, "web", &[t("10.1.0.21", 8080)]).unwrap();
        assert_eq!(none, Registry::default());
    }

    #[test]
    fn bad_registrations_name_the_problem() {
        let file = Config::parse(FILE).unwrap();
        let r = Registry::default();
        let e = r.register(&file, "api", &[t("10.1.0.21", 80)]).unwrap_err();
        assert_eq!(e.code, "TargetGroupNotFound");
        let e = r.register(&file, "web", &[t("fd01::1", 80)]).unwrap_err();
        assert_eq!(e.code, "InvalidTarget");
        assert!(e.message.contains("IPv4"), "{e}");
        let e = r
            .register(&file, "web", &[t("i-0123456789", 80)])
            .unwrap_err();
        assert!(e.message.contains("not an IP address"), "{e}");
        let many: Vec<_> = (21..=25).map(|i| t(&format!("10.1.0.{i}"), 8080)).collect();
        let e = r.register(&file, "web", &many).unwrap_err();
        assert_eq!(e.code, "ValidationError");
        assert!(e.message.contains("max_targets"), "{e}");
        let arn = "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/web/73e2d6bc24d8a067";
        let mut no_port = t("10.1.0.30", 0);
        no_port.port = None;
        let r = r.register(&file, arn, &[no_port]).unwrap();
        assert_eq!(r.target_groups["web"][0].port.0, 8080, "the group's port");
    }

    #[test]
    fn listener_attributes_override_until_reset() {
        let file = Config::parse(FILE).unwrap();
        let web = Owner::Listener("web".into());
        let kv = |v: &str| vec![("tcp.idle_timeout.seconds".to_string(), v.to_string())];
        let r = Registry::default()
            .modify(&file, &web, &kv("1200"), false)
            .unwrap();
        let (merged, w) = r.merged(&file);
        assert!(w.is_empty(), "{w:?}");
        let secs = merged.listeners[0].tcp_idle_timeout.map(|d| d.as_secs());
        assert_eq!(secs, Some(1200));
        let e = r.modify(&file, &web, &kv("7000"), false).unwrap_err();
        assert_eq!(e.code, "InvalidConfigurationRequest");
        assert!(e.message.contains("listener[0].tcp_idle_timeout"), "{e}");
        let api = Owner::Listener("api".into());
        let e = r.modify(&file, &api, &kv("60"), false).unwrap_err();
        assert_eq!(e.code, "ListenerNotFound");
        let back = r.modify(&file, &web, &kv(""), true).unwrap();
        assert_eq!(back, Registry::default(), "reset: the file's value");
    }

    #[test]
    fn state_file_round_trip() {
        let dir = std::env::temp_dir().join(format!("lb-reg-{}", std::process::id()));
        let file = Config::parse(FILE).unwrap();
        let r = Registry::default()
            .register(&file, "web", &[t("10.1.0.21", 8080)])
            .unwrap();
        r.save(&dir).unwrap();
        assert_eq!(Registry::load(&dir).unwrap(), r);
        std::fs::write(dir.join(STATE_FILE), "{").unwrap();
        assert!(format!("{:#}", Registry::load(&dir).unwrap_err()).contains("targets.json"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(Registry::load(&dir).unwrap(), Registry::default());
    }
}
