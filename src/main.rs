//! The `hermes-gateway` binary: everything lives in the library; see `cli`.

fn main() {
    std::process::exit(hermes_gateway::cli::main());
}
