//! The admin API's request and response shapes, after AWS elbv2's
//! `RegisterTargets`, `DeregisterTargets` and `DescribeTargetHealth`
//! (JSON field names as in the AWS API reference), so scripts that drive
//! an NLB switch with little change. A target group is named by
//! `TargetGroupArn`: its name here, or an ARN whose path ends in it
//! (`arn:aws:elasticloadbalancing:...:targetgroup/web/0123abcd` -> `web`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// `Targets[]` of the requests, `Target` of the descriptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetDescription {
    /// The target's IP address (targets of type `ip`).
    pub id: String,
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// Not in elbv2 (NLB has no weights): relative share, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TargetsRequest {
    pub target_group_arn: String,
    pub targets: Vec<TargetDescription>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeRequest {
    /// All groups when absent (elbv2 requires it; `lb targets describe`
    /// without `--target-group` lists every group).
    #[serde(default)]
    pub target_group_arn: Option<String>,
    /// Only these targets.
    #[serde(default)]
    pub targets: Option<Vec<TargetDescription>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetHealth {
    /// initial, healthy, unhealthy, unhealthy.draining, draining, unused,
    /// unavailable.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetHealthDescription {
    pub target: TargetDescription,
    pub health_check_port: Option<String>,
    pub target_health: TargetHealth,
    /// Not in elbv2: the target group (a describe may span groups), and
    /// where the target comes from ("config" or "registered").
    pub target_group: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeResponse {
    pub target_health_descriptions: Vec<TargetHealthDescription>,
}

/// `Attributes[]` of `Modify{TargetGroup,Listener}Attributes` and their
/// answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attribute {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// The request of `{Modify,Describe,Reset}TargetGroupAttributes` (a
/// `TargetGroupArn`) and of the same calls for listeners (a `ListenerArn`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AttributesRequest {
    #[serde(default)]
    pub target_group_arn: Option<String>,
    #[serde(default)]
    pub listener_arn: Option<String>,
    /// Absent for the describe calls.
    #[serde(default)]
    pub attributes: Vec<Attribute>,
}

/// What attributes belong to: a target group or a listener, by name (a
/// target group's ARN carries its name; a listener is named as in the
/// config, since an AWS listener ARN carries no name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Group(String),
    Listener(String),
}

impl AttributesRequest {
    pub fn owner(&self) -> Result<Owner, ApiError> {
        match (&self.target_group_arn, &self.listener_arn) {
            (Some(g), None) => Ok(Owner::Group(group_name(g).to_string())),
            (None, Some(l)) => Ok(Owner::Listener(l.clone())),
            _ => Err(ApiError::new(
                "ValidationError",
                "name exactly one of TargetGroupArn and ListenerArn",
            )),
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Group(g) => write!(f, "target group {g}"),
            Owner::Listener(l) => write!(f, "listener {l}"),
        }
    }
}

/// `lb flows`: tracked flows, filtered; at most `limit` (default 1000).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FlowsRequest {
    /// The VIP's address, or ADDR:PORT.
    #[serde(default)]
    pub vip: Option<String>,
    /// The target's address, or ADDR:PORT.
    #[serde(default)]
    pub target: Option<String>,
    /// The client's address, or ADDR:PORT.
    #[serde(default)]
    pub client: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `lb explain`: the target a new flow would get, and why.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ExplainRequest {
    pub client: std::net::SocketAddr,
    pub vip: std::net::SocketAddr,
    /// tcp or udp.
    pub protocol: String,
}

/// Whether `addr` (an address, or ADDR:PORT) names `ip:port`.
pub fn matches(filter: &Option<String>, ip: IpAddr, port: u16) -> bool {
    match filter.as_deref() {
        None => true,
        Some(f) => match f.parse::<std::net::SocketAddr>() {
            Ok(sa) => sa.ip() == ip && sa.port() == port,
            Err(_) => f.parse::<IpAddr>().is_ok_and(|a| a == ip),
        },
    }
}

/// An API call, as the daemon's main loop takes it.
#[derive(Debug, Clone)]
pub enum Call {
    Register(TargetsRequest),
    Deregister(TargetsRequest),
    Describe(DescribeRequest),
    Flows(FlowsRequest),
    Explain(ExplainRequest),
    ModifyAttributes(AttributesRequest),
    /// Not elbv2: removes the runtime overrides of the listed keys.
    ResetAttributes(AttributesRequest),
    DescribeAttributes(AttributesRequest),
}

/// An error as elbv2 reports one: its code and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn not_found(group: &str) -> ApiError {
        ApiError::new(
            "TargetGroupNotFound",
            format!("target group {group:?} is not in the config"),
        )
    }

    pub fn listener_not_found(name: &str) -> ApiError {
        ApiError::new(
            "ListenerNotFound",
            format!("listener {name:?} is not in the config (name it by its config name)"),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The target group a `TargetGroupArn` names.
pub fn group_name(arn: &str) -> &str {
    match arn.split_once(":targetgroup/") {
        Some((_, rest)) => rest.split('/').next().unwrap_or(rest),
        None => arn,
    }
}

impl TargetDescription {
    /// The address; `InvalidTarget` when `Id` is not an IP address (this
    /// gateway has no instance or Lambda targets).
    pub fn address(&self) -> Result<IpAddr, ApiError> {
        self.id.parse().map_err(|_| {
            ApiError::new(
                "InvalidTarget",
                format!(
                    "target Id {:?} is not an IP address (only targets of type ip)",
                    self.id
                ),
            )
        })
    }
}

/// A target's health as elbv2 words it: NLB's state and reason codes
/// (`suspect`, passive health, has no NLB state: `unhealthy`, with the
/// data path's finding as its description).
pub fn target_health(v: &super::TargetView, checks: bool) -> TargetHealth {
    let h = |state: &str, reason: Option<&str>, desc: Option<String>| TargetHealth {
        state: state.into(),
        reason: reason.map(Into::into),
        description: desc,
    };
    let last = Some(v.last_check.clone());
    match v.state {
        "draining" => h(
            "draining",
            Some("Target.DeregistrationInProgress"),
            v.drain_left
                .map(|d| format!("{}s of the deregistration delay left", d.as_secs())),
        ),
        "healthy" if !checks => h(
            "unavailable",
            Some("Target.HealthCheckDisabled"),
            Some("health checks are disabled; the target takes traffic".into()),
        ),
        "healthy" => h("healthy", None, None),
        "initial" if v.last_check == "not checked yet" => {
            h("initial", Some("Elb.RegistrationInProgress"), None)
        }
        "initial" => h("initial", Some("Elb.InitialHealthChecking"), last),
        "suspect" => h(
            "unhealthy",
            Some("Target.FailedHealthChecks"),
            v.passive.clone().or(last),
        ),
        _ if v.last_check.starts_with("timeout") => h("unhealthy", Some("Target.Timeout"), last),
        _ if v.last_check.ends_with("does not match") => {
            h("unhealthy", Some("Target.ResponseCodeMismatch"), last)
        }
        _ => h("unhealthy", Some("Target.FailedHealthChecks"), last),
    }
}

/// `ADDR:PORT[@ZONE][*WEIGHT]` (IPv6 in brackets), as `lb targets` takes
/// targets on its command line.
pub fn parse_target(s: &str) -> Result<TargetDescription, String> {
    let (rest, weight) = match s.rsplit_once('*') {
        Some((r, w)) => (
            r,
            Some(
                w.parse::<u32>()
                    .map_err(|_| format!("{s}: weight {w:?} is not a number"))?,
            ),
        ),
        None => (s, None),
    };
    let (hostport, zone) = match rest.split_once('@') {
        Some((h, z)) if !z.is_empty() => (h, Some(z.to_string())),
        Some(_) => return Err(format!("{s}: empty zone after '@'")),
        None => (rest, None),
    };
    let sa: std::net::SocketAddr = hostport.parse().map_err(|_| {
        format!("{s}: expected ADDR:PORT[@ZONE][*WEIGHT], e.g. 10.1.0.21:8080@a or [fd01::21]:8080")
    })?;
    Ok(TargetDescription {
        id: sa.ip().to_string(),
        port: Some(sa.port()),
        availability_zone: zone,
        weight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_on_the_command_line() {
        let t = parse_target("10.1.0.21:8080@a*3").unwrap();
        assert_eq!(
            (
                t.id.as_str(),
                t.port,
                t.availability_zone.as_deref(),
                t.weight
            ),
            ("10.1.0.21", Some(8080), Some("a"), Some(3))
        );
        let t = parse_target("[fd01::21]:80").unwrap();
        assert_eq!(
            (t.id.as_str(), t.availability_zone, t.weight),
            ("fd01::21", None, None)
        );
        assert!(parse_target("10.1.0.21").unwrap_err().contains("ADDR:PORT"));
        assert!(parse_target("10.1.0.21:80*x")
            .unwrap_err()
            .contains("weight"));
    }

    #[test]
    fn nlb_states_and_reasons() {
        let v = |state: &'static str, last: &str| super::super::TargetView {
            state,
            healthy: state == "healthy",
            last_check: last.into(),
            drain_left: None,
            passive: None,
        };
        let r = |state, last, checks| {
            let t = target_health(&v(state, last), checks);
            (t.state, t.reason.unwrap_or_default())
        };
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            r("initial", "not checked yet", true),
            s("initial", "Elb.RegistrationInProgress")
        );
        assert_eq!(r("healthy", "tcp connect ok", true), s("healthy", ""));
        assert_eq!(
            r("unhealthy", "timeout after 5s", true),
            s("unhealthy", "Target.Timeout")
        );
        assert_eq!(
            r("unhealthy", "http 500 does not match", true),
            s("unhealthy", "Target.ResponseCodeMismatch")
        );
        assert_eq!(
            r("unhealthy", "connect 10.1.0.1:80: refused", true),
            s("unhealthy", "Target.FailedHealthChecks")
        );
        assert_eq!(
            r("draining", "x", true),
            s("draining", "Target.DeregistrationInProgress")
        );
        assert_eq!(
            r("healthy", "health checks disabled", false),
            s("unavailable", "Target.HealthCheckDisabled")
        );
    }

    #[test]
    fn elbv2_shapes() {
        let r: TargetsRequest = serde_json::from_str(
            r#"{"TargetGroupArn":"arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/73e2d6bc24d8a067","Targets":[{"Id":"10.1.0.21","Port":8080,"AvailabilityZone":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(group_name(&r.target_group_arn), "web");
        assert_eq!(group_name("web"), "web");
        assert_eq!(r.targets[0].port, Some(8080));
        let e = serde_json::from_str::<TargetsRequest>(r#"{"TargetGroup":"web","Targets":[]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("TargetGroup"), "{e}");
    }
}
