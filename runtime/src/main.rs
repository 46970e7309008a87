//! The `natsapp-wasm` binary: parses the command line and hands over to the
//! library (see `cli`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
