//! The command tree.

mod apps;
mod config;
mod ctx;
mod deploy;
mod image;
mod logs;
mod machine;
mod scale;
mod secrets;
mod target;
mod volumes;

use clap::{Parser, Subcommand};

/// Hangar: run fly.toml apps on your own servers.
#[derive(Debug, Parser)]
#[command(name = "hangar", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    api: ctx::ApiArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with an app's fly.toml: validate it, print it normalised, or see the machines it implies.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Create, list and destroy apps.
    #[command(subcommand)]
    Apps(apps::AppsCommand),
    /// Deploy the app in fly.toml (creating it if needed) and wait until it is healthy.
    Deploy(deploy::DeployArgs),
    /// Show the app and its machines.
    Status(deploy::StatusArgs),
    /// Show and follow the app's logs.
    Logs(logs::LogsArgs),
    /// Work with individual machines.
    #[command(subcommand, alias = "m")]
    Machine(machine::MachineCommand),
    /// App secrets, given to machines as environment variables.
    #[command(subcommand)]
    Secrets(secrets::SecretsCommand),
    /// Change how many machines run.
    #[command(subcommand)]
    Scale(scale::ScaleCommand),
    /// Volumes: persistent disks, one per machine, with snapshots.
    #[command(subcommand, alias = "volume", alias = "vol")]
    Volumes(volumes::VolumesCommand),
    /// Build images without a container engine.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Facts about the platform.
    #[command(subcommand)]
    Platform(apps::PlatformCommand),
    /// API tokens.
    #[command(subcommand)]
    Tokens(apps::TokensCommand),
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Config(c) => config::run(c),
        Command::Apps(c) => apps::run(c, &cli.api),
        Command::Deploy(a) => deploy::run(a, &cli.api),
        Command::Status(a) => deploy::status(a, &cli.api),
        Command::Logs(a) => logs::run(a, &cli.api),
        Command::Machine(c) => machine::run(c, &cli.api),
        Command::Image(c) => image::run(c),
        Command::Volumes(c) => volumes::run(c, &cli.api),
        Command::Scale(c) => scale::run(c, &cli.api),
        Command::Secrets(c) => secrets::run(c, &cli.api),
        Command::Platform(c) => apps::platform(c, &cli.api),
        Command::Tokens(c) => apps::tokens(c, &cli.api),
    }
}
