//! The command tree.

mod apps;
mod certs;
mod config;
mod ctx;
mod deploy;
mod image;
mod ips;
mod launch;
mod logs;
mod machine;
mod progress;
mod scale;
mod secrets;
mod target;
mod volumes;
mod wireguard;

use clap::{Parser, Subcommand};

/// Hangar: run fly.toml apps on your own servers.
#[derive(Debug, Parser)]
#[command(
    name = "hangar",
    version,
    about,
    propagate_version = true,
    after_help = "Exit codes: 0 success; 1 invalid input, or a deploy that failed (and was rolled back); \
                  2 wrong usage or unreadable input (bad flags, no fly.toml, no API token); \
                  3 the API could not be reached or refused the request."
)]
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
    /// Create a new app from an image or a project with a Dockerfile: write its fly.toml,
    /// create it, deploy it.
    Launch(launch::LaunchArgs),
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
    /// Custom hostnames of the app and their TLS certificates.
    #[command(subcommand, alias = "certificates")]
    Certs(certs::CertsCommand),
    /// The app's addresses: Flycast (private, through the proxy) and public.
    #[command(subcommand)]
    Ips(ips::IpsCommand),
    /// WireGuard peers: your machine on an org's private network.
    #[command(subcommand, alias = "wg")]
    Wireguard(wireguard::WireguardCommand),
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
        Command::Launch(a) => launch::run(a, &cli.api),
        Command::Deploy(a) => deploy::run(a, &cli.api),
        Command::Status(a) => deploy::status(a, &cli.api),
        Command::Logs(a) => logs::run(a, &cli.api),
        Command::Machine(c) => machine::run(c, &cli.api),
        Command::Certs(c) => certs::run(c, &cli.api),
        Command::Image(c) => image::run(c),
        Command::Ips(c) => ips::run(c, &cli.api),
        Command::Wireguard(c) => wireguard::run(c, &cli.api),
        Command::Volumes(c) => volumes::run(c, &cli.api),
        Command::Scale(c) => scale::run(c, &cli.api),
        Command::Secrets(c) => secrets::run(c, &cli.api),
        Command::Platform(c) => apps::platform(c, &cli.api),
        Command::Tokens(c) => apps::tokens(c, &cli.api),
    }
}
