//! The `fanin` binary: everything lives in the library; see `fanin --help`.

/// mimalloc instead of the system allocator: the hot paths (HTTP requests,
/// MQTT messages, the store writer) allocate and free small objects on many
/// threads, where glibc's malloc spent a tenth of the writer thread's time
/// (BENCHMARKS.md, the performance pass).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fanin::cli::main()
}
