//! The `natsapp-wasm` binary: parses the command line and hands over to the
//! library (see `cli`).

mod cli;

#[global_allocator]
static ALLOCATOR: cli::allocator::Allocator = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
