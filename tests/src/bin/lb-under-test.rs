//! The `lb` command line, built with this crate so that cargo rebuilds it
//! (and the XDP object inside) before the integration tests run.
fn main() -> std::process::ExitCode {
    lb_userspace::cli::main()
}
