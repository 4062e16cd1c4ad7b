//! Target group attributes by NLB's keys (`ModifyTargetGroupAttributes`,
//! and `ModifyTargetGroup`'s health check settings as `health_check.*`
//! keys) and listener attributes (`ModifyListenerAttributes`): read from
//! and written to the config's `TargetGroup` and `Listener`. Values as
//! elbv2 takes them: strings ("true", "300", "source_ip").

use std::time::Duration;

use crate::{
    config::{Config, HealthProtocol, Listener, Port, Protocol, Stickiness, TargetGroup},
    telemetry::elbv2::Owner,
};

/// The listener keys this gateway takes (NLB: TCP listeners only).
pub const LISTENER_KEYS: [&str; 1] = ["tcp.idle_timeout.seconds"];

/// The keys `owner` takes.
pub fn keys_of(owner: &Owner) -> &'static [&'static str] {
    match owner {
        Owner::Group(_) => &KEYS,
        Owner::Listener(_) => &LISTENER_KEYS,
    }
}

/// Sets `key` to `value` on `owner` in `cfg`; the caller validates the
/// result as a whole. `Ok(false)`: `cfg` has no such owner.
pub fn apply(cfg: &mut Config, owner: &Owner, key: &str, value: &str) -> Result<bool, String> {
    match owner {
        Owner::Group(g) => match cfg.target_groups.iter_mut().find(|t| &t.name == g) {
            Some(tg) => set(tg, key, value).map(|_| true),
            None => Ok(false),
        },
        Owner::Listener(l) => match cfg.listeners.iter_mut().find(|x| &x.name == l) {
            Some(l) => set_listener(l, key, value).map(|_| true),
            None => Ok(false),
        },
    }
}

/// Sets a listener attribute.
pub fn set_listener(l: &mut Listener, key: &str, value: &str) -> Result<(), String> {
    match key {
        "tcp.idle_timeout.seconds" if l.protocol == Protocol::Udp => Err(format!(
            "{key}: listener {:?} is UDP (NLB has this attribute on TCP listeners only)",
            l.name
        )),
        "tcp.idle_timeout.seconds" => {
            l.tcp_idle_timeout = Some(secs(key, value)?);
            Ok(())
        }
        _ => Err(format!(
            "{key}: not a listener attribute this gateway has (it takes {})",
            LISTENER_KEYS.join(", ")
        )),
    }
}

/// Every attribute of listener `l` (none for UDP, as NLB), with the
/// gateway's default where the listener sets none.
pub fn listener_all(l: &Listener, gateway_tcp_idle: Duration) -> Vec<(String, String)> {
    if l.protocol == Protocol::Udp {
        return Vec::new();
    }
    let idle = l.tcp_idle_timeout.unwrap_or(gateway_tcp_idle);
    vec![(LISTENER_KEYS[0].to_string(), idle.as_secs().to_string())]
}

/// The keys this gateway takes, in the order they are listed.
pub const KEYS: [&str; 19] = [
    "deregistration_delay.timeout_seconds",
    "deregistration_delay.connection_termination.enabled",
    "stickiness.enabled",
    "stickiness.type",
    "load_balancing.cross_zone.enabled",
    "proxy_protocol_v2.enabled",
    "target_health_state.unhealthy.connection_termination.enabled",
    "target_health_state.unhealthy.draining_interval_seconds",
    "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count",
    "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage",
    "health_check.enabled",
    "health_check.protocol",
    "health_check.port",
    "health_check.path",
    "health_check.matcher",
    "health_check.interval_seconds",
    "health_check.timeout_seconds",
    "health_check.healthy_threshold_count",
    "health_check.unhealthy_threshold_count",
];

fn boolean(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key}: {v:?} is not true or false")),
    }
}

fn number(key: &str, v: &str) -> Result<u32, String> {
    v.parse()
        .map_err(|_| format!("{key}: {v:?} is not a whole number"))
}

fn secs(key: &str, v: &str) -> Result<Duration, String> {
    number(key, v).map(|n| Duration::from_secs(n as u64))
}

/// Sets `key` to `value` on `tg`; the caller validates the result as a
/// whole (ranges are the config's).
pub fn set(tg: &mut TargetGroup, key: &str, value: &str) -> Result<(), String> {
    let hc = &mut tg.health_check;
    match key {
        "deregistration_delay.timeout_seconds" => tg.deregistration_delay = secs(key, value)?,
        "deregistration_delay.connection_termination.enabled" => {
            tg.deregistration_connection_termination = boolean(key, value)?
        }
        "stickiness.enabled" => {
            tg.stickiness = match boolean(key, value)? {
                true => Stickiness::SourceIp,
                false => Stickiness::None,
            }
        }
        "stickiness.type" if value == "source_ip" => {}
        "stickiness.type" => return Err(format!("{key}: {value:?}: only source_ip (NLB's)")),
        "load_balancing.cross_zone.enabled" => {
            tg.cross_zone = match value {
                // The load balancer's setting: off, NLB's default.
                "use_load_balancer_configuration" => false,
                v => boolean(key, v)?,
            }
        }
        "proxy_protocol_v2.enabled" => tg.proxy_protocol_v2 = boolean(key, value)?,
        "target_health_state.unhealthy.connection_termination.enabled" => {
            tg.unhealthy_connection_termination = boolean(key, value)?
        }
        "target_health_state.unhealthy.draining_interval_seconds" => {
            tg.unhealthy_draining_interval = secs(key, value)?
        }
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count" => {
            tg.unhealthy_state_routing.minimum_healthy_targets = number(key, value)?
        }
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage" => {
            tg.unhealthy_state_routing.minimum_healthy_percentage = match value {
                "off" => 0,
                v => number(key, v)?,
            }
        }
        "health_check.enabled" => hc.enabled = boolean(key, value)?,
        "health_check.protocol" => {
            hc.protocol = match value.to_ascii_lowercase().as_str() {
                "tcp" => HealthProtocol::Tcp,
                "http" => HealthProtocol::Http,
                "https" => HealthProtocol::Https,
                _ => return Err(format!("{key}: {value:?}: TCP, HTTP or HTTPS")),
            }
        }
        "health_check.port" => {
            hc.port = match value {
                "traffic-port" => None,
                v => Some(Port(v.parse().ok().filter(|&p| p != 0).ok_or_else(
                    || format!("{key}: {v:?} is not a port or traffic-port"),
                )?)),
            }
        }
        "health_check.path" => hc.path = value.to_string(),
        "health_check.matcher" => hc.matcher = value.to_string(),
        "health_check.interval_seconds" => hc.interval = secs(key, value)?,
        "health_check.timeout_seconds" => hc.timeout = Some(secs(key, value)?),
        "health_check.healthy_threshold_count" => hc.healthy_threshold = number(key, value)?,
        "health_check.unhealthy_threshold_count" => hc.unhealthy_threshold = number(key, value)?,
        _ => {
            return Err(format!(
                "{key}: not an attribute this gateway has (it takes {})",
                KEYS.join(", ")
            ))
        }
    }
    Ok(())
}

/// Every attribute of `tg`, as elbv2 reports them.
pub fn all(tg: &TargetGroup) -> Vec<(String, String)> {
    let hc = &tg.health_check;
    let b = |v: bool| v.to_string();
    let values = [
        tg.deregistration_delay.as_secs().to_string(),
        b(tg.deregistration_connection_termination),
        b(tg.stickiness == Stickiness::SourceIp),
        "source_ip".into(),
        b(tg.cross_zone),
        b(tg.proxy_protocol_v2),
        b(tg.unhealthy_connection_termination),
        tg.unhealthy_draining_interval.as_secs().to_string(),
        tg.unhealthy_state_routing
            .minimum_healthy_targets
            .to_string(),
        match tg.unhealthy_state_routing.minimum_healthy_percentage {
            0 => "off".into(),
            p => p.to_string(),
        },
        b(hc.enabled),
        format!("{:?}", hc.protocol).to_ascii_uppercase(),
        hc.port.map_or("traffic-port".into(), |p| p.0.to_string()),
        hc.path.clone(),
        hc.matcher.clone(),
        hc.interval.as_secs().to_string(),
        hc.timeout().as_secs().to_string(),
        hc.healthy_threshold.to_string(),
        hc.unhealthy_threshold.to_string(),
    ];
    KEYS.iter()
        .zip(values)
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips() {
        let mut tg: TargetGroup = toml::from_str("name = \"web\"").unwrap();
        let before = all(&tg);
        for (k, v) in &before {
            set(&mut tg, k, v).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(all(&tg), before, "what all() says, set() takes");
        set(&mut tg, "deregistration_delay.timeout_seconds", "30").unwrap();
        set(&mut tg, "stickiness.enabled", "true").unwrap();
        set(&mut tg, "health_check.port", "8081").unwrap();
        assert_eq!(tg.deregistration_delay, Duration::from_secs(30));
        assert_eq!(tg.stickiness, Stickiness::SourceIp);
        assert_eq!(tg.health_check.port, Some(Port(8081)));
        assert!(set(&mut tg, "stickiness.type", "lb_cookie")
            .unwrap_err()
            .contains("source_ip"));
        assert!(set(&mut tg, "proxy_protocol_v2.enabled", "yes")
            .unwrap_err()
            .contains("true or false"));
        assert!(set(&mut tg, "load_balancing.algorithm.type", "x")
            .unwrap_err()
            .contains("not an attribute"));
    }

    #[test]
    fn listener_idle_timeout() {
        let text = "name = \"web\"\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\ntarget_group = \"web\"";
        let mut l: Listener = toml::from_str(text).unwrap();
        let gw = Duration::from_secs(350);
        assert_eq!(listener_all(&l, gw)[0].1, "350", "the gateway's, unset");
        set_listener(&mut l, "tcp.idle_timeout.seconds", "600").unwrap();
        assert_eq!(l.tcp_idle_timeout, Some(Duration::from_secs(600)));
        assert_eq!(listener_all(&l, gw)[0].1, "600");
        assert_eq!(l.tcp_idle_secs(), 600);
        assert!(set_listener(&mut l, "tcp.idle_timeout.seconds", "ten")
            .unwrap_err()
            .contains("whole number"));
        l.protocol = Protocol::Udp;
        assert!(listener_all(&l, gw).is_empty());
        assert!(set_listener(&mut l, "tcp.idle_timeout.seconds", "60")
            .unwrap_err()
            .contains("UDP"));
    }
}
