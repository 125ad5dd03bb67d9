//! The command tree.

mod config;

use clap::{Parser, Subcommand};

/// Hangar: run fly.toml apps on your own servers.
#[derive(Debug, Parser)]
#[command(name = "hangar", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with an app's fly.toml: validate it, print it normalised, or see the machines it implies.
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Config(c) => config::run(c),
    }
}
