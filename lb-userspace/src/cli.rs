//! The `lb` command line (a library function, so that tests run the very
//! same code as the shipped binary).
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::{
    config::{Config, Gateway},
    control,
    dataplane::xdp::Sizes,
    telemetry::admin,
};

#[derive(Parser)]
#[command(
    name = "lb",
    version,
    about = "L4 TCP/UDP load balancer with an XDP data plane (and a proxy fallback)",
    after_help = "Quick start:\n  lb check -c /etc/lb/lb.toml   # validate (errors name field and line)\n  lb run -c /etc/lb/lb.toml     # serve\n  lb reload                     # validate, reload, report (as SIGHUP)\n  lb status [--json]            # listeners, targets, last reload\n  lb targets register --target-group web 10.1.0.21:8080@a   # at runtime, kept across restarts\n  lb targets describe           # health, as describe-target-health\n  lb flows | lb explain C:P V:P/tcp   # tracked flows; where a new flow goes\n  lb stop [--detach]            # stop the daemon; XDP keeps forwarding\n  lb detach                     # take XDP down, remove pinned state\n\nSee README.md for the config reference and deployment notes."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The config file.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

/// Where a running daemon is found: from the config, or given directly
/// (when the file cannot be read).
#[derive(clap::Args)]
struct DaemonArgs {
    #[command(flatten)]
    cfg: ConfigArg,
    /// The daemon's socket (default: the config's gateway.admin_socket).
    #[arg(long)]
    socket: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load the XDP program, attach it and serve the config's listeners.
    ///
    /// Example: lb run --config /etc/lb/lb.toml
    ///
    /// The program and its state are pinned under gateway.pin_path, so a
    /// restarted or upgraded `lb run` takes them over without dropping a
    /// packet. On SIGTERM/SIGINT (and `lb stop`) forwarding goes on with the
    /// last state (hitless upgrades); `lb detach` or --detach-on-exit takes
    /// the data plane down.
    Run {
        #[command(flatten)]
        cfg: ConfigArg,
        /// Detach XDP and remove the pinned state when exiting.
        #[arg(long)]
        detach_on_exit: bool,
    },
    /// Show listeners and targets (zone, health, weight, active flows,
    /// packet and byte rates) and the last reload from the running daemon.
    ///
    /// Example: lb status --json
    Status {
        #[command(flatten)]
        at: DaemonArgs,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Have the running daemon reload its config file, and report how that
    /// went (as SIGHUP does, with the answer; exit status 1 when refused).
    ///
    /// Example: lb reload -c /etc/lb/lb.toml
    Reload {
        #[command(flatten)]
        at: DaemonArgs,
    },
    /// Stop the running daemon (SIGTERM, waiting for it to exit). XDP
    /// keeps forwarding with the last state unless --detach is given.
    ///
    /// Example: lb stop --detach
    Stop {
        #[command(flatten)]
        at: DaemonArgs,
        /// Pin directory (default: the config's gateway.pin_path).
        #[arg(long)]
        pin_path: Option<PathBuf>,
        /// Then detach XDP and remove the pinned state (tracked flows are
        /// dropped).
        #[arg(long)]
        detach: bool,
    },
    /// Detach the XDP program and remove its pinned maps (tracked flows are
    /// dropped). Refused while `lb run` serves them: `lb stop --detach`.
    ///
    /// Example: lb detach -c /etc/lb/lb.toml
    Detach {
        #[command(flatten)]
        at: DaemonArgs,
        /// Pin directory (default: the config's gateway.pin_path).
        #[arg(long)]
        pin_path: Option<PathBuf>,
    },
    /// Validate a config file and explain every error by field and line.
    ///
    /// Example: lb check -c /etc/lb/lb.toml
    Check {
        /// The config file (or -c FILE).
        file: Option<PathBuf>,
        #[arg(long, short, conflicts_with = "file")]
        config: Option<PathBuf>,
    },
    /// Register, deregister and describe targets at runtime (as
    /// `aws elbv2 register-targets` etc.), kept in gateway.state_dir across
    /// restarts and reloads.
    ///
    /// Example: lb targets register --target-group web 10.1.0.21:8080@a 10.1.0.22:8080@b
    Targets {
        #[command(subcommand)]
        cmd: TargetsCmd,
    },
    /// Target group and listener attributes at runtime, by NLB's keys (as
    /// modify-target-group-attributes and modify-listener-attributes), kept
    /// across restarts and reloads; they override the config file's values
    /// until reset.
    ///
    /// Example: lb attributes set --target-group web deregistration_delay.timeout_seconds=30
    ///
    /// Example: lb attributes set --listener web tcp.idle_timeout.seconds=1200
    Attributes {
        #[command(subcommand)]
        cmd: AttributesCmd,
    },
    /// Turn the saved JSON output of `aws elbv2 describe-load-balancers`,
    /// `describe-listeners`, `describe-target-groups`,
    /// `describe-target-group-attributes` and `describe-target-health` into
    /// an lb.toml and a state file of registered targets, and report what
    /// has no equivalent here.
    ///
    /// Example: lb import --load-balancers lb.json --listeners l.json --target-groups tg.json --attributes web=web-attrs.json --health web=web-health.json --interfaces eth0,eth1 --zone eu-west-1a --out lb.toml
    Import(ImportArgs),
    /// List tracked flows (XDP's conntrack): client, VIP, target, idle time
    /// and state; filters take an address or ADDR:PORT.
    ///
    /// Example: lb flows --target 10.1.0.12:8080
    Flows {
        #[command(flatten)]
        at: DaemonArgs,
        #[arg(long)]
        vip: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        client: Option<String>,
        /// At most this many (default 1000).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Which target a new flow from CLIENT to VIP would get, and why (zone
    /// or all-zones ring, stickiness, passive health, fail-open), computed
    /// as the data path does.
    ///
    /// Example: lb explain 203.0.113.7:40001 10.100.0.1:80/tcp
    Explain {
        #[command(flatten)]
        at: DaemonArgs,
        /// CLIENT_ADDR:PORT
        client: std::net::SocketAddr,
        /// VIP_ADDR:PORT/PROTO (tcp or udp)
        vip: String,
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    ///
    /// Example: lb completions bash > /etc/bash_completion.d/lb
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum AttributesCmd {
    /// The attributes in effect (and which were set at runtime).
    Show {
        #[command(flatten)]
        at: DaemonArgs,
        #[command(flatten)]
        of: OwnerArgs,
    },
    /// Set KEY=VALUE attributes (NLB's keys and values).
    Set {
        #[command(flatten)]
        at: DaemonArgs,
        #[command(flatten)]
        of: OwnerArgs,
        #[arg(required = true)]
        attributes: Vec<String>,
    },
    /// Back to the config file's values for these keys.
    Reset {
        #[command(flatten)]
        at: DaemonArgs,
        #[command(flatten)]
        of: OwnerArgs,
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

/// Whose attributes: a target group's or a listener's.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct OwnerArgs {
    /// A target group (name or ARN).
    #[arg(long)]
    target_group: Option<String>,
    /// A listener, by its config name.
    #[arg(long)]
    listener: Option<String>,
}

impl OwnerArgs {
    /// The API's action name for `verb` and the request field naming it.
    fn call(&self, verb: &str) -> (String, serde_json::Value) {
        match (&self.target_group, &self.listener) {
            (Some(g), _) => (
                format!("{verb}TargetGroupAttributes"),
                serde_json::json!({ "TargetGroupArn": g }),
            ),
            (None, l) => (
                format!("{verb}ListenerAttributes"),
                serde_json::json!({ "ListenerArn": l }),
            ),
        }
    }
}

#[derive(clap::Args)]
struct ImportArgs {
    /// Output of `aws elbv2 describe-load-balancers` (one network LB).
    #[arg(long)]
    load_balancers: PathBuf,
    /// Output of `aws elbv2 describe-listeners`.
    #[arg(long)]
    listeners: PathBuf,
    /// Output of `aws elbv2 describe-target-groups`.
    #[arg(long)]
    target_groups: PathBuf,
    /// GROUP=FILE: `describe-target-group-attributes` of a group (name or ARN).
    #[arg(long)]
    attributes: Vec<String>,
    /// GROUP=FILE: `describe-target-health` of a group (name or ARN).
    #[arg(long)]
    health: Vec<String>,
    /// gateway.interfaces of the new config (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    interfaces: Vec<String>,
    /// This gateway's zone (e.g. the AZ name it replaces).
    #[arg(long)]
    zone: String,
    /// VIPs, when the NLB had no fixed addresses.
    #[arg(long)]
    vip4: Option<std::net::IpAddr>,
    #[arg(long)]
    vip6: Option<std::net::IpAddr>,
    /// Source addresses for groups that did not preserve client IPs.
    #[arg(long)]
    snat4: Option<std::net::IpAddr>,
    #[arg(long)]
    snat6: Option<std::net::IpAddr>,
    /// Where to write the config (not over an existing file).
    #[arg(long, default_value = "lb.toml")]
    out: PathBuf,
    /// Where to write targets.json (default: beside --out); the daemon
    /// reads it from gateway.state_dir.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum TargetsCmd {
    /// Register targets: ADDR:PORT[@ZONE][*WEIGHT] (IPv6 in brackets). They
    /// start `initial`, are health checked, and take new flows once healthy.
    ///
    /// Example: lb targets register --target-group web 10.1.0.21:8080@a*2
    Register {
        #[command(flatten)]
        at: DaemonArgs,
        #[arg(long)]
        target_group: String,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Deregister targets: they drain for the group's deregistration_delay.
    ///
    /// Example: lb targets deregister --target-group web 10.1.0.21:8080
    Deregister {
        #[command(flatten)]
        at: DaemonArgs,
        #[arg(long)]
        target_group: String,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// The health of every target (of one group), as describe-target-health.
    ///
    /// Example: lb targets describe --target-group web --json
    Describe {
        #[command(flatten)]
        at: DaemonArgs,
        #[arg(long)]
        target_group: Option<String>,
        /// Print the API's JSON (elbv2's DescribeTargetHealth shape).
        #[arg(long)]
        json: bool,
    },
}

const DEFAULT_CONFIG: &str = "/etc/lb/lb.toml";

/// The gateway settings that locate a daemon: from the config, or (a file
/// that does not validate, e.g. after a failed reload) from its raw TOML,
/// or the defaults; the operator is told which.
fn gateway_of(path: &Path) -> Gateway {
    match Config::load(path) {
        Ok(c) => c.gateway,
        Err(e) => {
            let first = format!("{e:#}");
            let first = first.lines().take(2).collect::<Vec<_>>().join(" ");
            let raw = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok());
            let get = |k: &str| {
                raw.as_ref()?
                    .get("gateway")?
                    .get(k)?
                    .as_str()
                    .map(PathBuf::from)
            };
            let mut g = Gateway::default();
            if let Some(p) = get("admin_socket") {
                g.admin_socket = p;
            }
            if let Some(p) = get("pin_path") {
                g.pin_path = p;
            }
            eprintln!(
                "note: {first}; using gateway.admin_socket {} and gateway.pin_path {}",
                g.admin_socket.display(),
                g.pin_path.display()
            );
            g
        }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn socket_of(at: &DaemonArgs) -> PathBuf {
    at.socket
        .clone()
        .unwrap_or_else(|| gateway_of(&at.cfg.config).admin_socket)
}

fn print_lines(done: Vec<String>) {
    for m in done {
        println!("{m}");
    }
}

/// `lb reload`: the daemon re-reads its config file (as on SIGHUP), counts
/// and records the result, and answers with it.
fn reload(at: &DaemonArgs) -> Result<()> {
    let file = std::fs::canonicalize(&at.cfg.config).unwrap_or_else(|_| at.cfg.config.clone());
    let body = serde_json::json!({ "file": file }).to_string();
    let answer = block_on(admin::request(
        &socket_of(at),
        "POST",
        "/v1/reload",
        Some(body),
    ))?;
    print!("{}", answer.body);
    if answer.status != 200 {
        anyhow::bail!("the daemon did not apply the config (see above); it keeps the running one");
    }
    Ok(())
}

/// One call of the elbv2-shaped API; an error answer is the command's.
fn api(at: &DaemonArgs, action: &str, body: serde_json::Value) -> Result<serde_json::Value> {
    let a = block_on(admin::request(
        &socket_of(at),
        "POST",
        &format!("/v1/{action}"),
        Some(body.to_string()),
    ))?;
    let v: serde_json::Value =
        serde_json::from_str(&a.body).map_err(|_| anyhow::anyhow!("{}", a.body.trim_end()))?;
    if let Some(e) = v.get("Error") {
        let code = e.get("Code").and_then(|c| c.as_str()).unwrap_or("Error");
        let msg = e.get("Message").and_then(|c| c.as_str()).unwrap_or("");
        anyhow::bail!("{code}: {msg}");
    }
    Ok(v)
}

fn attributes(cmd: AttributesCmd) -> Result<()> {
    let (at, of, verb, attrs) = match cmd {
        AttributesCmd::Show { at, of } => (at, of, "Describe", Vec::new()),
        AttributesCmd::Set { at, of, attributes } => {
            let attrs = attributes
                .iter()
                .map(|kv| {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("{kv}: expected KEY=VALUE"))?;
                    Ok(serde_json::json!({ "Key": k, "Value": v }))
                })
                .collect::<Result<Vec<_>>>()?;
            (at, of, "Modify", attrs)
        }
        AttributesCmd::Reset { at, of, keys } => {
            let attrs = keys
                .iter()
                .map(|k| serde_json::json!({ "Key": k }))
                .collect();
            (at, of, "Reset", attrs)
        }
    };
    let (action, mut body) = of.call(verb);
    body["Attributes"] = serde_json::Value::Array(attrs);
    let v = api(&at, &action, body)?;
    for a in v["Attributes"].as_array().into_iter().flatten() {
        let runtime = if a["SetAtRuntime"] == true {
            "  (set at runtime)"
        } else {
            ""
        };
        println!(
            "{:<80} {}{runtime}",
            a["Key"].as_str().unwrap_or(""),
            a["Value"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `lb import`: writes the config and the state file, prints the report.
fn import(a: ImportArgs) -> Result<()> {
    use anyhow::Context as _;
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let pairs = |v: &[String]| -> Result<Vec<(String, String)>> {
        v.iter()
            .map(|kv| {
                let (g, f) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("{kv}: expected GROUP=FILE"))?;
                Ok((g.to_string(), read(Path::new(f))?))
            })
            .collect()
    };
    let (lbs, ls, tgs) = (
        read(&a.load_balancers)?,
        read(&a.listeners)?,
        read(&a.target_groups)?,
    );
    let (attrs, health) = (pairs(&a.attributes)?, pairs(&a.health)?);
    let inputs = crate::config::import::Inputs {
        load_balancers: &lbs,
        listeners: &ls,
        target_groups: &tgs,
        attributes: attrs.iter().map(|(g, t)| (g.clone(), t.as_str())).collect(),
        health: health
            .iter()
            .map(|(g, t)| (g.clone(), t.as_str()))
            .collect(),
        interfaces: a.interfaces,
        zone: a.zone,
        vip4: a.vip4,
        vip6: a.vip6,
        snat4: a.snat4,
        snat6: a.snat6,
    };
    let out = crate::config::import::import(&inputs).map_err(anyhow::Error::msg)?;
    if a.out.exists() {
        anyhow::bail!(
            "{} exists: not overwritten (choose another --out)",
            a.out.display()
        );
    }
    let dir = a.state_dir.unwrap_or_else(|| {
        a.out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    });
    if dir.join(control::registry::STATE_FILE).exists() {
        anyhow::bail!(
            "{} exists: not overwritten (it may hold a running daemon's registered targets; choose another --state-dir)",
            dir.join(control::registry::STATE_FILE).display()
        );
    }
    std::fs::write(&a.out, &out.toml).with_context(|| format!("writing {}", a.out.display()))?;
    let n: usize = out.targets.values().map(Vec::len).sum();
    let reg = control::registry::Registry {
        target_groups: out.targets,
        ..Default::default()
    };
    let state = reg.save(&dir)?;
    println!(
        "wrote {} and {} ({n} registered targets)",
        a.out.display(),
        state.display()
    );
    println!("check it with `lb check {}`; the daemon reads the targets from gateway.state_dir (default /var/lib/lb)", a.out.display());
    for r in &out.report {
        println!("no equivalent: {r}");
    }
    Ok(())
}

fn targets(cmd: TargetsCmd) -> Result<()> {
    use crate::telemetry::elbv2::{parse_target, DescribeResponse};
    let parse = |ts: &[String]| -> Result<Vec<_>> {
        ts.iter()
            .map(|t| parse_target(t).map_err(anyhow::Error::msg))
            .collect()
    };
    // A registration or deregistration, and what to say when done.
    let change =
        |at: &DaemonArgs, group: &str, targets: &[String], action: &str, said: [&str; 3]| {
            let ts = parse(targets)?;
            let body = serde_json::json!({ "TargetGroupArn": group, "Targets": ts });
            api(at, action, body)?;
            let [verb, prep, tail] = said;
            let n = ts.len();
            println!(
                "{verb} {n} target(s) {prep} {group}: {}; {tail}",
                targets.join(", ")
            );
            Ok(())
        };
    match cmd {
        TargetsCmd::Register {
            at,
            target_group,
            targets,
        } => change(
            &at,
            &target_group,
            &targets,
            "RegisterTargets",
            [
                "registered",
                "in",
                "each takes new flows once its health checks pass (lb targets describe)",
            ],
        ),
        TargetsCmd::Deregister {
            at,
            target_group,
            targets,
        } => change(
            &at,
            &target_group,
            &targets,
            "DeregisterTargets",
            [
                "deregistered",
                "from",
                "they drain for its deregistration_delay",
            ],
        ),
        TargetsCmd::Describe {
            at,
            target_group,
            json,
        } => {
            let body = match &target_group {
                Some(g) => serde_json::json!({ "TargetGroupArn": g }),
                None => serde_json::json!({}),
            };
            let v = api(&at, "DescribeTargetHealth", body)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let d: DescribeResponse = serde_json::from_value(v)?;
            println!(
                "{:<16} {:<28} {:<8} {:<12} {:<32} {:<10}  DESCRIPTION",
                "TARGET GROUP", "TARGET", "ZONE", "STATE", "REASON", "SOURCE"
            );
            for t in d.target_health_descriptions {
                let addr: std::net::IpAddr = t.target.id.parse()?;
                println!(
                    "{:<16} {:<28} {:<8} {:<12} {:<32} {:<10}  {}",
                    t.target_group,
                    std::net::SocketAddr::new(addr, t.target.port.unwrap_or(0)).to_string(),
                    t.target.availability_zone.unwrap_or_default(),
                    t.target_health.state,
                    t.target_health.reason.unwrap_or_default(),
                    t.source,
                    t.target_health.description.unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

/// The daemon's socket and pin directory: as given, else from the config.
fn daemon_paths(at: DaemonArgs, pin_path: Option<PathBuf>) -> (PathBuf, PathBuf) {
    match (at.socket, pin_path) {
        (Some(s), Some(p)) => (s, p),
        (s, p) => {
            let g = gateway_of(&at.cfg.config);
            (s.unwrap_or(g.admin_socket), p.unwrap_or(g.pin_path))
        }
    }
}

fn check(path: &Path) -> Result<()> {
    let (cfg, warnings) = Config::load_checked(path)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let s = Sizes::from_config(&cfg);
    println!(
        "{}: ok ({} listeners, {} target groups); map memory about {:.1} MiB",
        path.display(),
        cfg.listeners.len(),
        cfg.target_groups.len(),
        s.memory() as f64 / (1 << 20) as f64
    );
    Ok(())
}

fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Run {
            cfg,
            detach_on_exit,
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(control::run(cfg.config, detach_on_exit)),
        Cmd::Status { at, json } => {
            let uri = if json {
                "/v1/status?format=json"
            } else {
                "/v1/status"
            };
            let a = block_on(admin::request(&socket_of(&at), "GET", uri, None))?;
            print!("{}", a.body);
            if a.status != 200 {
                anyhow::bail!("the daemon refused (HTTP {})", a.status);
            }
            Ok(())
        }
        Cmd::Targets { cmd } => targets(cmd),
        Cmd::Attributes { cmd } => attributes(cmd),
        Cmd::Import(a) => import(a),
        Cmd::Flows {
            at,
            vip,
            target,
            client,
            limit,
            json,
        } => {
            let req = serde_json::json!({ "Vip": vip, "Target": target, "Client": client, "Limit": limit });
            let v = api(&at, "flows", req)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "{:<44} {:<44} {:<5} {:<44} {:>14}  STATE",
                "CLIENT", "VIP", "PROTO", "TARGET", "IDLE/TIMEOUT"
            );
            let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
            for f in v["Flows"].as_array().into_iter().flatten() {
                println!(
                    "{:<44} {:<44} {:<5} {:<44} {:>14}  {}",
                    s(&f["Client"]),
                    s(&f["Vip"]),
                    s(&f["Protocol"]),
                    s(&f["Target"]),
                    format!("{}ms/{}s", f["IdleMs"], f["IdleTimeoutS"]),
                    s(&f["State"])
                );
            }
            let more = if v["Truncated"] == true {
                " (more: --limit)"
            } else {
                ""
            };
            println!("{} live flows in all{more}", v["LiveFlows"]);
            Ok(())
        }
        Cmd::Explain {
            at,
            client,
            vip,
            json,
        } => {
            let (addr, proto) = vip.rsplit_once('/').ok_or_else(|| {
                anyhow::anyhow!("{vip}: expected VIP_ADDR:PORT/PROTO, e.g. 10.100.0.1:80/tcp")
            })?;
            let addr: std::net::SocketAddr = addr
                .parse()
                .map_err(|_| anyhow::anyhow!("{addr}: expected VIP_ADDR:PORT"))?;
            let req = serde_json::json!({ "Client": client, "Vip": addr, "Protocol": proto });
            let v = api(&at, "explain", req)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            match v["Target"].as_str() {
                Some(t) => println!(
                    "{client} -> {vip}: target {t} (listener {}, target group {})",
                    v["Listener"].as_str().unwrap_or(""),
                    v["TargetGroup"].as_str().unwrap_or("")
                ),
                None => println!(
                    "{client} -> {vip}: {}",
                    v["Outcome"].as_str().unwrap_or("no target")
                ),
            }
            for w in v["Why"].as_array().into_iter().flatten() {
                println!("  {}", w.as_str().unwrap_or(""));
            }
            Ok(())
        }
        Cmd::Reload { at } => reload(&at),
        Cmd::Stop {
            at,
            pin_path,
            detach,
        } => {
            let (socket, pin) = daemon_paths(at, pin_path);
            print_lines(control::stop::stop(&socket, &pin, detach)?);
            Ok(())
        }
        Cmd::Detach { at, pin_path } => {
            let (socket, pin) = daemon_paths(at, pin_path);
            let done = control::stop::detach(&socket, &pin)?;
            if done.is_empty() {
                println!("nothing pinned");
            }
            print_lines(done);
            Ok(())
        }
        Cmd::Check { file, config } => {
            check(&file.or(config).unwrap_or_else(|| DEFAULT_CONFIG.into()))
        }
        Cmd::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "lb", &mut std::io::stdout());
            Ok(())
        }
    }
}

pub fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match dispatch(Cli::parse().cmd) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
