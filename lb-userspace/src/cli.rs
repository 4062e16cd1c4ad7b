//! The `lb` command line (a library function, so that tests run the very
//! same code as the shipped binary).
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{
    config::Config,
    control,
    dataplane::xdp::{pins, Sizes},
};

#[derive(Parser)]
#[command(
    name = "lb",
    version,
    about = "L4 TCP/UDP load balancer with an XDP data plane (and a proxy fallback)",
    after_help = "Quick start:\n  lb check /etc/lb/lb.toml      # validate (errors name field and line)\n  lb run -c /etc/lb/lb.toml     # serve; SIGHUP reloads\n  lb status                     # listeners and targets\n  lb stop                       # detach XDP, remove pinned state\n\nSee README.md for the config reference and deployment notes."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load the XDP program, attach it and serve the config's listeners.
    ///
    /// Example: lb run --config /etc/lb/lb.toml
    ///
    /// The program and its state are pinned under gateway.pin_path, so a
    /// restarted or upgraded `lb run` takes them over without dropping a
    /// packet. On SIGTERM/SIGINT forwarding goes on with the last state
    /// (hitless upgrades); `lb stop` or --detach-on-exit detaches.
    Run {
        #[arg(long, short, default_value = "/etc/lb/lb.toml")]
        config: PathBuf,
        /// Detach XDP and remove the pinned state when exiting.
        #[arg(long)]
        detach_on_exit: bool,
    },
    /// Show listeners and targets (zone, health, weight, active flows,
    /// packet and byte rates) from the running daemon.
    ///
    /// Example: lb status
    Status {
        #[arg(long, short, default_value = "/etc/lb/lb.toml")]
        config: PathBuf,
        /// The daemon's socket, when the config cannot be read.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Print a shell completion script.
    ///
    /// Example: lb completions bash > /etc/bash_completion.d/lb
    Completions { shell: clap_complete::Shell },
    /// Detach the XDP program and remove its pinned maps (tracked flows are
    /// dropped). Run it after stopping `lb run`.
    ///
    /// Example: lb stop --config /etc/lb/lb.toml
    Stop {
        #[arg(long, short, default_value = "/etc/lb/lb.toml")]
        config: PathBuf,
        /// Pin directory, when the config cannot be read.
        #[arg(long)]
        pin_path: Option<PathBuf>,
    },
    /// Validate a config file and explain every error by field and line.
    ///
    /// Example: lb check /etc/lb/lb.toml
    Check { config: PathBuf },
}

pub fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Run {
            config,
            detach_on_exit,
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(control::run(config, detach_on_exit))),
        Cmd::Status { config, socket } => socket
            .map(Ok)
            .unwrap_or_else(|| Config::load(&config).map(|c| c.gateway.admin_socket))
            .and_then(|sock| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(crate::telemetry::admin::status_client(&sock))
            })
            .map(|text| print!("{text}")),
        Cmd::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "lb", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Stop { config, pin_path } => pin_path
            .map(Ok)
            .unwrap_or_else(|| Config::load(&config).map(|c| c.gateway.pin_path))
            .and_then(|p| pins::stop(&p))
            .map(|done| {
                if done.is_empty() {
                    println!("nothing pinned");
                }
                for m in done {
                    println!("{m}");
                }
            }),
        Cmd::Check { config } => Config::load(&config).map(|cfg| {
            let s = Sizes::from_config(&cfg);
            println!(
                "{}: ok ({} listeners, {} target groups); map memory about {:.1} MiB",
                config.display(),
                cfg.listeners.len(),
                cfg.target_groups.len(),
                s.memory() as f64 / (1 << 20) as f64
            );
        }),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
