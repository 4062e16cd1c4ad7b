//! `lb`: an L4 load balancer (XDP fast path) for Linux gateways.
fn main() -> std::process::ExitCode {
    lb_userspace::cli::main()
}
