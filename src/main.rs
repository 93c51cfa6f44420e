// mimalloc, called the way its fast paths expect (src/alloc.rs).
#[global_allocator]
static GLOBAL: icpgate::alloc::MiMalloc = icpgate::alloc::MiMalloc;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use icpgate::cli::{self, CheckSource};

#[derive(Parser)]
#[command(
    name = "icpgate",
    version,
    about = "ICP filing enforcement at the edge"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve: listeners, admin API, table reloads.
    Run {
        #[arg(long, default_value = "config/icpgate.toml")]
        config: PathBuf,
    },
    /// Print the decision and its explanation for each host.
    Check {
        #[arg(long, conflicts_with = "table")]
        config: Option<PathBuf>,
        #[arg(long)]
        table: Option<PathBuf>,
        /// Destination IP (for the mainland check and strict IP).
        #[arg(long)]
        dst: Option<IpAddr>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        hosts: Vec<String>,
    },
    /// Lint a table; non-zero exit with line-numbered errors if it would be rejected.
    Validate { path: PathBuf },
    /// What replacing table OLD by NEW would change: rows added, removed
    /// and changed; with --traffic, the names newly blocked or allowed and
    /// the share of that traffic affected. Exit 0 if the guard would accept
    /// NEW, 1 if it would reject it (unless forced), 2 on errors.
    Diff {
        old: PathBuf,
        new: PathBuf,
        /// Recent traffic: one name per line, optionally followed by a
        /// count (default 1), e.g. exported from /v1/top-blocked-like logs.
        #[arg(long)]
        traffic: Option<PathBuf>,
        /// Decision policy (overrides, R3, R7) and [table] max_flip /
        /// max_shrink from this config (default: built-in defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(c as u8)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.cmd {
        Cmd::Run { config } => code(icpgate::run::main(&config)),
        Cmd::Check {
            config,
            table,
            dst,
            json,
            hosts,
        } => {
            let default_cfg = PathBuf::from("config/icpgate.toml");
            let source = match (&config, &table) {
                (_, Some(t)) => CheckSource::Table(t),
                (Some(c), None) => CheckSource::Config(c),
                (None, None) => CheckSource::Config(&default_cfg),
            };
            let (snap, policy) = match cli::load_for_check(source) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("icpgate check: {e}");
                    return code(cli::EXIT_ERROR);
                }
            };
            let now = icpgate::decision::now_unix();
            let mut out = std::io::stdout().lock();
            code(cli::check(&snap, &policy, &hosts, dst, json, now, &mut out))
        }
        Cmd::Diff {
            old,
            new,
            traffic,
            config,
            json,
        } => {
            let mut out = std::io::stdout().lock();
            let mut err = std::io::stderr().lock();
            code(cli::diff(
                &old,
                &new,
                traffic.as_deref(),
                config.as_deref(),
                json,
                &mut out,
                &mut err,
            ))
        }
        Cmd::Validate { path } => {
            let mut out = std::io::stdout().lock();
            let mut err = std::io::stderr().lock();
            code(cli::validate(&path, &mut out, &mut err))
        }
    }
}
