//! The command line (SPEC §2): argument parsing, exit codes, and one function per command.
//!
//! Commands other than `run` are small clients: they read the config, then talk to the
//! running gateway over HTTP or act on files in `HERMES_HOME` (the drain marker).

mod auth;
mod client;
mod cron;
mod drain;
mod inspect;
mod logging;
mod run;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, ConfigError, EXIT_CONFIG, ProcessEnv};

/// Exit status for "the command ran but the answer is no" (unreachable, timed out, weak).
pub const EXIT_FAILURE: i32 = 1;
/// Exit status for a command used the wrong way (also clap's for bad arguments).
pub const EXIT_USAGE: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "hermes-gateway",
    version,
    about = "Control plane of the Hermes agent gateway"
)]
struct Cli {
    /// State directory (overrides HERMES_HOME; default ~/.hermes).
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Config file (default $HERMES_HOME/config.yaml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server, dashboard and drain watcher until SIGTERM/SIGINT.
    Run,
    /// Show the running gateway's status.
    Status(Target),
    /// Begin, cancel, inspect or wait for a drain.
    #[command(subcommand)]
    Drain(DrainCommand),
    /// Drain-secret helpers (the entropy gate).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Check or show the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Dashboard sign-in helpers.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Manage cron jobs on the running gateway.
    #[command(subcommand)]
    Cron(cron::CronCommand),
}

/// Where to reach the gateway and how to print.
#[derive(Debug, Args, Clone)]
struct Target {
    /// Dashboard base URL (default: from the config, or gateway_state.json).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Print JSON for machines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum DrainCommand {
    /// Stop accepting new turns (in-flight turns finish). Writes the marker in HERMES_HOME,
    /// or with --url calls the dashboard using HERMES_DASHBOARD_DRAIN_SECRET.
    Begin(Target),
    /// Accept turns again.
    Cancel(Target),
    /// Show whether draining and what is still in flight.
    Status(Target),
    /// Wait until no turn is in flight; non-zero exit on timeout.
    Wait {
        #[command(flatten)]
        target: Target,
        /// Seconds to wait before giving up.
        #[arg(long, default_value_t = 300.0, value_name = "S")]
        timeout: f64,
    },
}

#[derive(Debug, Subcommand)]
enum AuthCommand {
    /// Read a password on stdin (no echo on a terminal) and print its argon2id hash for
    /// HERMES_DASHBOARD_BASIC_AUTH_PASSWORD_HASH.
    HashPassword,
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Print a new strong drain secret.
    Generate,
    /// Run the entropy gate on HERMES_DASHBOARD_DRAIN_SECRET (and _NEXT), or on stdin.
    Check {
        /// Read the secret from standard input instead of the environment.
        #[arg(long)]
        stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate; exit 78 listing every problem.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Print the effective config (secrets redacted) and each provider's status.
    Show {
        #[arg(long)]
        json: bool,
    },
}

/// Parses arguments, runs the command, returns the process exit status.
pub fn main() -> i32 {
    // A turn's keeper runs before anything else (no runtime, no threads): see agent::keeper.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == crate::agent::keeper::SUBCOMMAND)
    {
        return crate::agent::keeper::main(&args[2..]);
    }
    let cli = Cli::parse();
    let home = home_dir(cli.home.clone());
    let load = || config::load_file(&home, cli.config.as_deref(), &ProcessEnv);
    match cli.command {
        Command::Run => match load() {
            Ok(config) => run::run(config),
            Err(e) => config_failure(&e),
        },
        Command::Status(t) => with_config(load(), |c| client::block_on(inspect::status(&c, &t))),
        Command::Drain(cmd) => with_config(load(), |c| client::block_on(drain::command(&c, cmd))),
        Command::Cron(cmd) => with_config(load(), |c| client::block_on(cron::command(&c, cmd))),
        Command::Auth(AuthCommand::HashPassword) => auth::hash_password(),
        Command::Secret(SecretCommand::Generate) => {
            println!("{}", crate::auth::drain_secret::generate_secret());
            0
        }
        Command::Secret(SecretCommand::Check { stdin }) => {
            with_config(load(), |c| inspect::secret_check(&c, stdin))
        }
        Command::Config(ConfigCommand::Check { json }) => match load() {
            Ok(c) => inspect::config_check(&c, json),
            Err(e) if json => {
                println!("{}", inspect::config_error_json(&e));
                EXIT_CONFIG
            }
            Err(e) => config_failure(&e),
        },
        Command::Config(ConfigCommand::Show { json }) => {
            with_config(load(), |c| inspect::config_show(&c, json))
        }
    }
}

fn with_config(loaded: Result<Config, ConfigError>, f: impl FnOnce(Config) -> i32) -> i32 {
    match loaded {
        Ok(c) => f(c),
        Err(e) => config_failure(&e),
    }
}

fn config_failure(e: &ConfigError) -> i32 {
    eprintln!("hermes-gateway: {e}");
    EXIT_CONFIG
}

/// `--home`, else `HERMES_HOME`, else `~/.hermes` (compat).
fn home_dir(flag: Option<PathBuf>) -> PathBuf {
    use crate::config::Env;
    flag.or_else(|| ProcessEnv.var("HERMES_HOME").map(PathBuf::from))
        .unwrap_or_else(|| {
            ProcessEnv
                .var("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".hermes")
        })
}
