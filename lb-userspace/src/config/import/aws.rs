//! The saved `aws elbv2 describe-*` outputs, in the AWS CLI's JSON shapes
//! (PascalCase, as the elbv2 API reference names them). Only the fields the
//! import reads; others are ignored, since AWS adds fields over time.

use std::net::IpAddr;

use serde::{de::DeserializeOwned, Deserialize};

/// Parses `text`, the output of `what` (e.g. "describe-listeners"); an
/// error names the command and the field (`TargetGroups[1].Port: ...`).
pub fn parse<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." | "" => format!("{what}: {}", e.into_inner()),
            _ => format!("{what}: {path}: {}", e.into_inner()),
        }
    })?;
    de.end().map_err(|e| format!("{what}: {e}"))?;
    Ok(v)
}

/// `describe-load-balancers`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoadBalancers {
    pub load_balancers: Vec<LoadBalancer>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoadBalancer {
    pub load_balancer_arn: String,
    pub load_balancer_name: String,
    /// `network`, `application` or `gateway`.
    #[serde(rename = "Type")]
    pub kind: String,
    pub scheme: Option<String>,
    pub ip_address_type: Option<String>,
    #[serde(default)]
    pub availability_zones: Vec<AvailabilityZone>,
    #[serde(default)]
    pub security_groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AvailabilityZone {
    pub zone_name: String,
    #[serde(default)]
    pub load_balancer_addresses: Vec<LoadBalancerAddress>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoadBalancerAddress {
    /// An Elastic IP (internet-facing) or the static address.
    pub ip_address: Option<IpAddr>,
    #[serde(rename = "PrivateIPv4Address")]
    pub private_ipv4_address: Option<IpAddr>,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: Option<IpAddr>,
}

/// `describe-listeners`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Listeners {
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Listener {
    pub listener_arn: String,
    pub load_balancer_arn: Option<String>,
    pub port: u16,
    /// `TCP`, `UDP`, `TCP_UDP`, `TLS`, `QUIC`, `TCP_QUIC`.
    pub protocol: String,
    #[serde(default)]
    pub default_actions: Vec<Action>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Action {
    #[serde(rename = "Type")]
    pub kind: String,
    pub target_group_arn: Option<String>,
    pub forward_config: Option<ForwardConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ForwardConfig {
    #[serde(default)]
    pub target_groups: Vec<WeightedGroup>,
    pub target_group_stickiness_config: Option<GroupStickiness>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WeightedGroup {
    pub target_group_arn: String,
    pub weight: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GroupStickiness {
    pub enabled: Option<bool>,
}

/// `describe-target-groups`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetGroups {
    pub target_groups: Vec<TargetGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetGroup {
    pub target_group_arn: String,
    pub target_group_name: String,
    pub protocol: Option<String>,
    pub port: Option<u16>,
    /// `ip`, `instance`, `alb` or `lambda` (AWS's default: `instance`).
    pub target_type: Option<String>,
    /// `ipv4` or `ipv6`.
    pub ip_address_type: Option<String>,
    pub health_check_protocol: Option<String>,
    /// `traffic-port` or a port number, as a string.
    pub health_check_port: Option<String>,
    pub health_check_enabled: Option<bool>,
    pub health_check_interval_seconds: Option<u64>,
    pub health_check_timeout_seconds: Option<u64>,
    pub healthy_threshold_count: Option<u64>,
    pub unhealthy_threshold_count: Option<u64>,
    pub health_check_path: Option<String>,
    pub matcher: Option<Matcher>,
    #[serde(default)]
    pub load_balancer_arns: Vec<String>,
}

impl TargetGroup {
    pub fn is_ipv6(&self) -> bool {
        self.ip_address_type.as_deref() == Some("ipv6")
    }

    pub fn target_type(&self) -> &str {
        self.target_type.as_deref().unwrap_or("instance")
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Matcher {
    pub http_code: Option<String>,
}

/// `describe-target-group-attributes`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attributes {
    pub attributes: Vec<Attribute>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attribute {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// `describe-target-health`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetHealth {
    pub target_health_descriptions: Vec<TargetHealthDescription>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetHealthDescription {
    pub target: TargetDescription,
    pub target_health: Option<TargetHealthState>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetDescription {
    /// An IP address (`ip` groups), an instance ID, an ALB ARN or a Lambda ARN.
    pub id: String,
    pub port: Option<u16>,
    /// A zone name, or `all` for an address outside the VPC.
    pub availability_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetHealthState {
    /// `initial`, `healthy`, `unhealthy`, `unhealthy.draining`, `unused`,
    /// `draining` or `unavailable`.
    pub state: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_command_and_the_field() {
        let e = parse::<TargetGroups>(
            "describe-target-groups",
            r#"{"TargetGroups": [{"TargetGroupArn": "a", "TargetGroupName": "web", "Port": "80"}]}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("describe-target-groups: TargetGroups[0].Port: invalid type"),
            "{e}"
        );
        let e = parse::<Listeners>("describe-listeners", "{}").unwrap_err();
        assert!(
            e.starts_with("describe-listeners: missing field `Listeners`"),
            "{e}"
        );
        let e = parse::<Listeners>("describe-listeners", r#"{"Listeners": []} x"#).unwrap_err();
        assert!(
            e.starts_with("describe-listeners: trailing characters"),
            "{e}"
        );
    }
}
