//! `lb import`: a network load balancer's saved `aws elbv2 describe-*`
//! outputs as an `lb.toml`, its registered targets (for the state file),
//! and a report of what has no equivalent here, one line each, naming the
//! AWS field. Pure: the caller reads the files and writes the results. The
//! TOML is checked with `Config::parse`, and again with the targets merged
//! in, before it is returned.
//!
//! `aws` has the response shapes, `group` the target group settings,
//! `write` the TOML text.

mod aws;
mod group;
mod write;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
};

use crate::config::{
    Config, ConfigErrors, DataplaneKind, Gateway, Listener, Port, Protocol, Target, TargetGroup,
};

/// The saved outputs, and what AWS does not say about this gateway.
#[derive(Debug, Clone, Default)]
pub struct Inputs<'a> {
    /// `aws elbv2 describe-load-balancers` (one load balancer).
    pub load_balancers: &'a str,
    /// `aws elbv2 describe-listeners --load-balancer-arn ...`.
    pub listeners: &'a str,
    /// `aws elbv2 describe-target-groups`.
    pub target_groups: &'a str,
    /// (target group name or ARN, `describe-target-group-attributes` output).
    pub attributes: Vec<(String, &'a str)>,
    /// (target group name or ARN, `describe-target-health` output).
    pub health: Vec<(String, &'a str)>,
    /// `gateway.interfaces`.
    pub interfaces: Vec<String>,
    /// `gateway.zone`: this gateway's availability zone.
    pub zone: String,
    /// The listeners' addresses; default: the NLB's fixed addresses.
    pub vip4: Option<IpAddr>,
    pub vip6: Option<IpAddr>,
    /// `snat_address` for groups whose NLB did not preserve client
    /// addresses (`preserve_client_ip.enabled = false`); without one they
    /// are written as `nat`.
    pub snat4: Option<IpAddr>,
    pub snat6: Option<IpAddr>,
}

#[derive(Debug, Clone)]
pub struct Imported {
    /// An `lb.toml` that `Config::parse` accepts.
    pub toml: String,
    /// Registered targets by target group name (the state file's shape);
    /// groups without any are left out.
    pub targets: BTreeMap<String, Vec<Target>>,
    /// What has no equivalent here (or was adjusted), one line each.
    pub report: Vec<String>,
}

pub fn import(i: &Inputs) -> Result<Imported, String> {
    check_inputs(i)?;
    let mut report = Vec::new();
    let lb = load_balancer(aws::parse("describe-load-balancers", i.load_balancers)?)?;
    let listeners: aws::Listeners = aws::parse("describe-listeners", i.listeners)?;
    let groups: aws::TargetGroups = aws::parse("describe-target-groups", i.target_groups)?;
    let groups = &groups.target_groups;
    let attributes = per_group(
        groups,
        &i.attributes,
        "describe-target-group-attributes",
        |what, text| aws::parse::<aws::Attributes>(what, text).map(|a| a.attributes),
    )?;
    let health = per_group(
        groups,
        &i.health,
        "describe-target-health",
        aws::parse::<aws::TargetHealth>,
    )?;
    load_balancer_report(&lb, &i.zone, &mut report);

    let mut vips = Vips {
        lb: &lb,
        zone: &i.zone,
        given: [i.vip4, i.vip6],
        found: [None, None],
    };
    let kept = convert_listeners(&lb, &listeners.listeners, groups, &mut vips, &mut report)?;

    let mut target_groups = Vec::new();
    let mut targets = BTreeMap::new();
    let mut unattached = Vec::new();
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| {
        groups[a]
            .target_group_name
            .cmp(&groups[b].target_group_name)
    });
    for gi in order {
        let g = &groups[gi];
        let users: Vec<&Listener> = kept
            .listeners
            .iter()
            .zip(&kept.groups)
            .filter(|(_, &lg)| lg == gi)
            .map(|(l, _)| l)
            .collect();
        if users.is_empty() {
            if kept.skipped_groups.contains(&gi)
                || g.load_balancer_arns.contains(&lb.load_balancer_arn)
            {
                report.push(format!(
                    "target group {}: used by no imported listener; not written",
                    g.target_group_name
                ));
            } else {
                unattached.push(g.target_group_name.as_str());
            }
            continue;
        }
        let tg = group::convert(
            &group::Group {
                tg: g,
                attributes: attributes.get(&gi).map(Vec::as_slice),
                udp_only: users.iter().all(|l| l.protocol == Protocol::Udp),
                snat: if g.is_ipv6() { i.snat6 } else { i.snat4 },
            },
            &mut report,
        );
        let t = group_targets(g, health.get(&gi), &i.zone, &mut report);
        if !t.is_empty() {
            targets.insert(g.target_group_name.clone(), t);
        }
        target_groups.push(tg);
    }
    if !unattached.is_empty() {
        report.push(format!(
            "describe-target-groups: target groups not attached to {} are not written: {}",
            lb.load_balancer_name,
            unattached.join(", ")
        ));
    }

    let gateway = gateway(i, &kept.listeners, &target_groups, &targets, &mut report)?;
    let cfg = Config {
        gateway,
        listeners: kept.listeners,
        target_groups,
        announce: None,
    };
    let header = [
        format!(
            "Imported by `lb import` from network load balancer {}",
            lb.load_balancer_name
        ),
        format!("({})", lb.load_balancer_arn),
        "Its registered targets go to the state file (targets.json), not here.".to_string(),
    ];
    let toml = write::render(&cfg, &header);
    check(&toml, &targets)?;
    Ok(Imported {
        toml,
        targets,
        report,
    })
}

/// Inputs that are wrong whatever the files say.
fn check_inputs(i: &Inputs) -> Result<(), String> {
    if i.zone.is_empty() {
        return Err("no zone: give this gateway's availability zone (gateway.zone, --zone), e.g. one of the load balancer's AvailabilityZones".into());
    }
    for (flag, a, v6) in [
        ("--vip4", i.vip4, false),
        ("--vip6", i.vip6, true),
        ("--snat4", i.snat4, false),
        ("--snat6", i.snat6, true),
    ] {
        if let Some(a) = a.filter(|a| a.is_ipv6() != v6) {
            let fam = if v6 { "IPv6" } else { "IPv4" };
            return Err(format!("{flag} {a} is not an {fam} address"));
        }
    }
    Ok(())
}

/// The one network load balancer of the describe-load-balancers output.
fn load_balancer(lbs: aws::LoadBalancers) -> Result<aws::LoadBalancer, String> {
    let mut all = lbs.load_balancers;
    if all.len() != 1 {
        let names: Vec<&str> = all.iter().map(|l| l.load_balancer_name.as_str()).collect();
        return Err(match names.len() {
            0 => "describe-load-balancers: LoadBalancers is empty: save the output for the load balancer to import".into(),
            n => format!(
                "describe-load-balancers lists {n} load balancers ({}): import one at a time (save `aws elbv2 describe-load-balancers --names NAME`)",
                names.join(", ")
            ),
        });
    }
    let lb = all.remove(0);
    if lb.kind != "network" {
        return Err(format!(
            "load balancer {} has Type {:?}: only network load balancers (Type \"network\") can be imported",
            lb.load_balancer_name, lb.kind
        ));
    }
    Ok(lb)
}

/// Load balancer settings with no equivalent here.
fn load_balancer_report(lb: &aws::LoadBalancer, zone: &str, report: &mut Vec<String>) {
    let name = &lb.load_balancer_name;
    if let Some(s) = &lb.scheme {
        report.push(format!(
            "load balancer {name}: Scheme = {s}: no equivalent; who reaches the VIP is up to the network's routing (and [announce])"
        ));
    }
    if !lb.security_groups.is_empty() {
        report.push(format!(
            "load balancer {name}: SecurityGroups = {}: their rules are not in these files (describe-security-groups); write their inbound sources as each listener's allow = [...] (and gateway.deny)",
            lb.security_groups.join(", ")
        ));
    }
    if let Some(t) = lb
        .ip_address_type
        .as_deref()
        .filter(|t| t.starts_with("dualstack"))
    {
        report.push(format!(
            "load balancer {name}: IpAddressType = {t}: the NLB also took IPv6 clients for IPv4 target groups; here a listener and its targets are of one family (an IPv6 listener needs an IPv6 target group)"
        ));
    }
    let zones: Vec<&str> = lb
        .availability_zones
        .iter()
        .map(|z| z.zone_name.as_str())
        .collect();
    if !zones.is_empty() && !zones.contains(&zone) {
        report.push(format!(
            "load balancer {name}: AvailabilityZones are {}, and this gateway's zone {zone:?} is none of them: with cross_zone = false it uses every zone's targets (its own has none)",
            zones.join(", ")
        ));
    }
}

/// The target group (by name or ARN) of each given output, parsed.
fn per_group<T>(
    groups: &[aws::TargetGroup],
    given: &[(String, &str)],
    what: &str,
    parse: impl Fn(&str, &str) -> Result<T, String>,
) -> Result<HashMap<usize, T>, String> {
    let mut out = HashMap::new();
    for (key, text) in given {
        let Some(gi) = groups
            .iter()
            .position(|g| &g.target_group_name == key || &g.target_group_arn == key)
        else {
            return Err(format!(
                "{what} output given for {key:?}: describe-target-groups lists no target group of that name or ARN"
            ));
        };
        let name = &groups[gi].target_group_name;
        let v = parse(&format!("{what} of {name}"), text)?;
        if out.insert(gi, v).is_some() {
            return Err(format!("{what} output given twice for target group {name}"));
        }
    }
    Ok(out)
}

/// The listeners' addresses, per family: given, or the NLB's.
struct Vips<'a> {
    lb: &'a aws::LoadBalancer,
    zone: &'a str,
    /// --vip4, --vip6.
    given: [Option<IpAddr>; 2],
    /// Taken from the NLB's addresses (reported once).
    found: [Option<IpAddr>; 2],
}

impl Vips<'_> {
    fn get(&mut self, v6: bool, report: &mut Vec<String>) -> Result<IpAddr, String> {
        let f = v6 as usize;
        if let Some(a) = self.given[f].or(self.found[f]) {
            return Ok(a);
        }
        let (flag, fam) = if v6 {
            ("--vip6", "IPv6")
        } else {
            ("--vip4", "IPv4")
        };
        let mut all: Vec<(&str, IpAddr)> = Vec::new();
        for z in &self.lb.availability_zones {
            for a in &z.load_balancer_addresses {
                let ip = match v6 {
                    true => a.ipv6_address,
                    false => a.ip_address.or(a.private_ipv4_address),
                };
                if let Some(ip) = ip.filter(|ip| ip.is_ipv6() == v6) {
                    all.push((&z.zone_name, ip));
                }
            }
        }
        // This gateway's zone first, then by zone name.
        all.sort_by_key(|&(z, ip)| (z != self.zone, z, ip));
        let name = &self.lb.load_balancer_name;
        let Some(&(zone, ip)) = all.first() else {
            return Err(format!(
                "load balancer {name} has no fixed {fam} address (AvailabilityZones[].LoadBalancerAddresses): give the listeners' {fam} VIP with {flag}"
            ));
        };
        let each: Vec<String> = all.iter().map(|(z, a)| format!("{a} in {z}")).collect();
        report.push(format!(
            "load balancer {name}: AvailabilityZones[].LoadBalancerAddresses: the NLB had one address per zone ({}); here one VIP serves every zone: {ip} (of {zone}) is used; give {flag} to choose",
            each.join(", ")
        ));
        self.found[f] = Some(ip);
        Ok(ip)
    }
}

/// The imported listeners, with the index of each one's target group.
struct Kept {
    listeners: Vec<Listener>,
    groups: Vec<usize>,
    /// Groups of skipped listeners.
    skipped_groups: BTreeSet<usize>,
}

fn convert_listeners(
    lb: &aws::LoadBalancer,
    list: &[aws::Listener],
    groups: &[aws::TargetGroup],
    vips: &mut Vips,
    report: &mut Vec<String>,
) -> Result<Kept, String> {
    let find = |arn: &str| groups.iter().position(|g| g.target_group_arn == arn);
    let mut kept = Kept {
        listeners: Vec::new(),
        groups: Vec::new(),
        skipped_groups: BTreeSet::new(),
    };
    let mut sorted: Vec<&aws::Listener> = list.iter().collect();
    sorted.sort_by(|a, b| (a.port, &a.protocol).cmp(&(b.port, &b.protocol)));
    for l in sorted {
        if let Some(arn) = l
            .load_balancer_arn
            .as_ref()
            .filter(|a| **a != lb.load_balancer_arn)
        {
            return Err(format!(
                "describe-listeners: listener {} is of load balancer {arn}, not {} (save `aws elbv2 describe-listeners --load-balancer-arn {}`)",
                l.listener_arn, lb.load_balancer_arn, lb.load_balancer_arn
            ));
        }
        let what = format!("listener {}:{} ({})", l.protocol, l.port, l.listener_arn);
        let arns = forward_arns(l);
        let protocol = match l.protocol.as_str() {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "TCP_UDP" => Protocol::TcpUdp,
            p => {
                let why = match p {
                    "TLS" => {
                        "lb does not terminate TLS; its certificates and SslPolicy are not used"
                    }
                    "QUIC" | "TCP_QUIC" => "QUIC connection-ID routing is not supported",
                    _ => "not a network load balancer protocol",
                };
                report.push(format!(
                    "{what}: Protocol = {p} is not importable yet ({why}); skipped"
                ));
                kept.skipped_groups
                    .extend(arns.iter().filter_map(|(a, _)| find(a)));
                continue;
            }
        };
        let Some(&(arn, _)) = arns.first() else {
            report.push(format!(
                "{what}: DefaultActions has no forward action; skipped"
            ));
            continue;
        };
        let gi = find(arn).ok_or_else(|| {
            format!(
                "{what} forwards to target group {arn}, which describe-target-groups does not list"
            )
        })?;
        if arns.len() > 1 {
            let each: Vec<String> = arns
                .iter()
                .map(|(a, w)| {
                    let name = find(a).map_or(*a, |g| groups[g].target_group_name.as_str());
                    format!("{name} weight {}", w.unwrap_or(1))
                })
                .collect();
            report.push(format!(
                "{what}: DefaultActions[].ForwardConfig.TargetGroups weighs {} groups ({}): here a listener forwards to one; {} is used",
                arns.len(),
                each.join(", "),
                groups[gi].target_group_name
            ));
        }
        let sticky = l.default_actions.iter().any(|a| {
            a.forward_config
                .as_ref()
                .and_then(|f| f.target_group_stickiness_config.as_ref())
                .and_then(|s| s.enabled)
                == Some(true)
        });
        if sticky {
            report.push(format!(
                "{what}: ForwardConfig.TargetGroupStickinessConfig.Enabled = true: no stickiness between target groups here"
            ));
        }
        kept.listeners.push(Listener {
            name: format!("{}-{}", l.protocol.to_lowercase(), l.port),
            address: vips.get(groups[gi].is_ipv6(), report)?,
            port: Port(l.port),
            protocol,
            target_group: groups[gi].target_group_name.clone(),
            // describe-listeners does not carry listener attributes.
            tcp_idle_timeout: None,
            allow: Vec::new(),
            certificates: Vec::new(),
            security_policy: None,
            alpn_policy: None,
        });
        kept.groups.push(gi);
    }
    if kept.listeners.is_empty() {
        return Err(format!(
            "load balancer {} has no listener that can be imported (TCP, UDP or TCP_UDP, forwarding to a target group): {}",
            lb.load_balancer_name,
            if report.is_empty() { "describe-listeners lists none".to_string() } else { report.join("; ") }
        ));
    }
    Ok(kept)
}

/// The target group ARNs (with weights) of a listener's forward action.
fn forward_arns(l: &aws::Listener) -> Vec<(&str, Option<u64>)> {
    let Some(a) = l.default_actions.iter().find(|a| a.kind == "forward") else {
        return Vec::new();
    };
    match &a.forward_config {
        Some(f) if !f.target_groups.is_empty() => f
            .target_groups
            .iter()
            .map(|g| (g.target_group_arn.as_str(), g.weight))
            .collect(),
        _ => a
            .target_group_arn
            .iter()
            .map(|arn| (arn.as_str(), None))
            .collect(),
    }
}

/// A group's registered targets, from its describe-target-health output.
fn group_targets(
    g: &aws::TargetGroup,
    health: Option<&aws::TargetHealth>,
    zone: &str,
    report: &mut Vec<String>,
) -> Vec<Target> {
    let name = &g.target_group_name;
    let mut descriptions: Vec<&aws::TargetHealthDescription> = health
        .map(|h| h.target_health_descriptions.iter().collect())
        .unwrap_or_default();
    descriptions.sort_by(|a, b| (&a.target.id, a.target.port).cmp(&(&b.target.id, b.target.port)));
    let kind = g.target_type();
    if kind != "ip" {
        let ids: Vec<&str> = descriptions.iter().map(|d| d.target.id.as_str()).collect();
        let registered = match ids.len() {
            0 => String::new(),
            n => format!(" ({n} registered: {})", ids.join(", ")),
        };
        report.push(format!(
            "target group {name}: TargetType = {kind}: its targets cannot be imported{registered}, since lb forwards to IP addresses; it is written without targets (register their addresses with `lb targets register`)"
        ));
        return Vec::new();
    }
    if health.is_none() {
        report.push(format!(
            "target group {name}: no describe-target-health output was given: no targets imported"
        ));
    }
    let mut out: Vec<Target> = Vec::new();
    for d in descriptions {
        let t = &d.target;
        let Ok(address) = t.id.parse::<IpAddr>() else {
            report.push(format!(
                "target group {name}: Target.Id {:?} is not an IP address; skipped",
                t.id
            ));
            continue;
        };
        let Some(port) = t.port.or(g.port).filter(|&p| p > 0) else {
            report.push(format!(
                "target group {name}: target {address} has no Target.Port, nor the group a Port; skipped"
            ));
            continue;
        };
        let at = format!(
            "target group {name}: target {}",
            SocketAddr::new(address, port)
        );
        if d.target_health.as_ref().and_then(|h| h.state.as_deref()) == Some("draining") {
            report.push(format!(
                "{at}: TargetHealth.State = draining (being deregistered): not imported"
            ));
            continue;
        }
        if address.is_ipv6() != g.is_ipv6() {
            report.push(format!(
                "{at}: not of the group's IpAddressType {}; skipped",
                g.ip_address_type.as_deref().unwrap_or("ipv4")
            ));
            continue;
        }
        let zone = match t.availability_zone.as_deref() {
            Some(z) if z != "all" && !z.is_empty() => z.to_string(),
            z => {
                report.push(format!(
                    "{at}: AvailabilityZone = {}: zone = {zone:?} (this gateway's) is written",
                    z.unwrap_or("(none)")
                ));
                zone.to_string()
            }
        };
        if !out.iter().any(|o| o.address == address && o.port.0 == port) {
            out.push(Target {
                address,
                port: Port(port),
                zone,
                weight: 1,
            });
        }
    }
    out.sort_by_key(|t| (t.address, t.port));
    out
}

/// `[gateway]`: the given interfaces and zone, the data plane the groups
/// need, and map sizes that hold the imported listeners and targets.
fn gateway(
    i: &Inputs,
    listeners: &[Listener],
    groups: &[TargetGroup],
    targets: &BTreeMap<String, Vec<Target>>,
    report: &mut Vec<String>,
) -> Result<Gateway, String> {
    let mut g = Gateway {
        interfaces: i.interfaces.clone(),
        zone: i.zone.clone(),
        ..Gateway::default()
    };
    let pp2: Vec<&str> = groups
        .iter()
        .filter(|t| t.proxy_protocol_v2)
        .map(|t| t.name.as_str())
        .collect();
    if !pp2.is_empty() {
        g.dataplane = DataplaneKind::Proxy;
        report.push(format!(
            "target group {}: proxy_protocol_v2.enabled = true: gateway.dataplane = \"proxy\" is written for every listener (the XDP data plane cannot add the header)",
            pp2.join(", ")
        ));
    }
    if g.interfaces.is_empty() && g.dataplane != DataplaneKind::Proxy {
        return Err(
            "no interfaces: give the interfaces XDP attaches to (gateway.interfaces, --interface)"
                .into(),
        );
    }
    let keys: usize = listeners.iter().map(|l| l.protocol.ip_protos().len()).sum();
    if keys > g.max_vips as usize {
        g.max_vips = keys as u32;
    }
    let total: usize = targets.values().map(Vec::len).sum();
    if total > g.max_targets as usize {
        g.max_targets = total.next_power_of_two() as u32;
    }
    Ok(g)
}

/// The TOML passes `Config::parse`, and stays valid with the targets.
fn check(toml: &str, targets: &BTreeMap<String, Vec<Target>>) -> Result<(), String> {
    let cfg = Config::parse(toml)
        .map_err(|e| format!("the imported config is not valid:\n{e}\n\n{toml}"))?;
    let mut merged = cfg;
    for tg in &mut merged.target_groups {
        if let Some(t) = targets.get(&tg.name) {
            tg.targets.extend(t.iter().cloned());
        }
    }
    let errs = merged.validate();
    if !errs.is_empty() {
        return Err(format!(
            "the imported targets do not fit the imported config:\n{}",
            ConfigErrors(errs)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LB: &str = r#"{"LoadBalancers": [{
        "LoadBalancerArn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/n/1",
        "LoadBalancerName": "n", "Type": "network",
        "AvailabilityZones": [
            {"ZoneName": "b", "LoadBalancerAddresses": [{"IpAddress": "203.0.113.2", "IPv6Address": "2001:db8::2"}]},
            {"ZoneName": "a", "LoadBalancerAddresses": [{"PrivateIPv4Address": "10.0.0.1"}]}
        ]}]}"#;

    #[test]
    fn the_vip_is_the_address_of_this_gateways_zone() {
        let lbs: aws::LoadBalancers = aws::parse("t", LB).unwrap();
        let lb = load_balancer(lbs).unwrap();
        let mut report = Vec::new();
        let mut vips = Vips {
            lb: &lb,
            zone: "b",
            given: [None, None],
            found: [None, None],
        };
        assert_eq!(
            vips.get(false, &mut report).unwrap().to_string(),
            "203.0.113.2"
        );
        assert_eq!(
            vips.get(false, &mut report).unwrap().to_string(),
            "203.0.113.2"
        );
        assert_eq!(
            vips.get(true, &mut report).unwrap().to_string(),
            "2001:db8::2"
        );
        assert_eq!(report.len(), 2, "reported once per family: {report:?}");
        assert!(
            report[0].contains("(203.0.113.2 in b, 10.0.0.1 in a)"),
            "own zone first: {}",
            report[0]
        );
        vips.zone = "a";
        vips.found = [None, None];
        assert_eq!(
            vips.get(false, &mut report).unwrap().to_string(),
            "10.0.0.1"
        );
        vips.given = [None, "2001:db8::9".parse().ok()];
        assert_eq!(
            vips.get(true, &mut report).unwrap().to_string(),
            "2001:db8::9"
        );
    }

    #[test]
    fn forward_config_weights_and_plain_forward() {
        let ls: aws::Listeners = aws::parse(
            "t",
            r#"{"Listeners": [
                {"ListenerArn": "l1", "Port": 80, "Protocol": "TCP",
                 "DefaultActions": [{"Type": "forward", "TargetGroupArn": "g1"}]},
                {"ListenerArn": "l2", "Port": 81, "Protocol": "TCP",
                 "DefaultActions": [{"Type": "forward", "ForwardConfig": {"TargetGroups": [
                    {"TargetGroupArn": "g1", "Weight": 3}, {"TargetGroupArn": "g2", "Weight": 1}]}}]},
                {"ListenerArn": "l3", "Port": 82, "Protocol": "TCP", "DefaultActions": []}
            ]}"#,
        )
        .unwrap();
        assert_eq!(forward_arns(&ls.listeners[0]), [("g1", None)]);
        assert_eq!(
            forward_arns(&ls.listeners[1]),
            [("g1", Some(3)), ("g2", Some(1))]
        );
        assert!(forward_arns(&ls.listeners[2]).is_empty());
    }

    #[test]
    fn addresses_of_the_wrong_family_are_refused() {
        let i = Inputs {
            zone: "a".into(),
            vip4: "2001:db8::1".parse().ok(),
            ..Inputs::default()
        };
        assert_eq!(
            import(&i).unwrap_err(),
            "--vip4 2001:db8::1 is not an IPv4 address"
        );
        let i = Inputs {
            zone: String::new(),
            ..Inputs::default()
        };
        assert!(import(&i).unwrap_err().starts_with("no zone"));
    }
}
