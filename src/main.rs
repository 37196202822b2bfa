//! The `fanin` binary: everything lives in the library; see `fanin --help`.

fn main() -> std::process::ExitCode {
    fanin::cli::main()
}
