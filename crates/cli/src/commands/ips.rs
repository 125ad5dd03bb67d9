//! `hangar ips list|allocate-v6|allocate-v4|release`: an app's addresses. `allocate-v6
//! --private` allocates a Flycast address (the app through the proxy, from one private
//! network: the app's own, `--org`'s or `--network`'s); public addresses are the server's own,
//! shared by the apps (the operator names them with `hangard --public-ip`).

use anyhow::{Context as _, bail};
use clap::Subcommand;
use hangar_api_types::{AllocateIpRequest, IpAssignment};
use hangar_client::ClientError;

use super::ctx::{ApiArgs, block_on, table};
use super::target::AppArgs;
use crate::exit;

#[derive(Debug, Subcommand)]
pub(crate) enum IpsCommand {
    /// List the app's addresses.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        app: AppArgs,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// Allocate an IPv6 address (--private: a Flycast address).
    ///
    /// With --private, a Flycast address: the app through the proxy (balancing, autostart)
    /// from one private network, the app's own unless --org or --network names another.
    /// Without, the server's public IPv6 address, recorded for the app.
    #[command(name = "allocate-v6")]
    AllocateV6 {
        #[command(flatten)]
        app: AppArgs,
        /// A private (Flycast) address.
        #[arg(long)]
        private: bool,
        /// With --private: reachable from this org's network instead of the app's own.
        #[arg(long, short = 'o', value_name = "ORG")]
        org: Option<String>,
        /// With --private: reachable from this custom network instead of the app's own.
        #[arg(long, value_name = "NAME")]
        network: Option<String>,
        /// Region (recorded; addresses are global).
        #[arg(long, short = 'r')]
        region: Option<String>,
    },
    /// Record the server's public IPv4 address for the app (--shared).
    ///
    /// A dedicated IPv4 address is not available on a self-hosted server: the apps share the
    /// server's addresses.
    #[command(name = "allocate-v4")]
    AllocateV4 {
        #[command(flatten)]
        app: AppArgs,
        /// The shared address.
        #[arg(long)]
        shared: bool,
        /// Region (recorded; addresses are global).
        #[arg(long, short = 'r')]
        region: Option<String>,
    },
    /// Release addresses of the app.
    Release {
        /// The addresses.
        #[arg(required = true, value_name = "IP")]
        ips: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
    },
}

fn kind(ip: &IpAssignment) -> &'static str {
    match (ip.is_flycast(), ip.shared) {
        (true, _) => "private (Flycast)",
        (false, Some(true)) => "public (shared)",
        (false, _) => "public",
    }
}

fn version(ip: &IpAssignment) -> &'static str {
    if ip.ip.contains(':') { "v6" } else { "v4" }
}

fn network(ip: &IpAssignment) -> String {
    ip.network
        .as_ref()
        .map(|n| format!("{}/{}", n.org_slug, n.name))
        .unwrap_or_default()
}

/// What to print for an address just allocated.
fn allocated(app: &str, ip: &IpAssignment) -> String {
    match &ip.network {
        Some(n) if ip.is_flycast() => format!(
            "Allocated Flycast address {} for {app}: machines of network '{}' of org '{}' reach \
             the app at {app}.flycast (or that address) on its services' ports",
            ip.ip, n.name, n.org_slug
        ),
        _ => format!("Allocated {} {} for {app}", kind(ip), ip.ip),
    }
}

/// The API's refusal, prefixed with what to do about the common ones.
fn explain(e: ClientError, app: &str, ip: Option<&str>) -> anyhow::Error {
    let hint = match (e.status(), ip) {
        (Some(404), None) => Some(format!(
            "app '{app}' (or the org named with --org) is not visible with this token \
             (hangar apps list shows what is)"
        )),
        (Some(404), Some(ip)) => Some(format!(
            "{ip} is not an address of {app} (hangar ips list -a {app} shows them)"
        )),
        _ => None,
    };
    let e = anyhow::Error::new(e);
    match hint {
        Some(h) => e.context(h),
        None => e,
    }
}

async fn allocate(
    client: &hangar_client::Client,
    app: &str,
    req: AllocateIpRequest,
) -> anyhow::Result<()> {
    let ip = client
        .allocate_ip(app, &req)
        .await
        .map_err(|e| explain(e, app, None))?;
    println!("{}", allocated(app, &ip));
    Ok(())
}

pub(crate) fn run(c: IpsCommand, api: &ApiArgs) -> anyhow::Result<u8> {
    let client = api.client()?;
    block_on(async move {
        match c {
            IpsCommand::List { app, json } => {
                let name = app.name()?;
                let ips = client
                    .ip_assignments(&name)
                    .await
                    .with_context(|| format!("listing the addresses of {name}"))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&ips)?);
                } else if ips.is_empty() {
                    println!(
                        "{name} has no addresses (hangar ips allocate-v6 --private for a Flycast one)"
                    );
                } else {
                    let rows: Vec<Vec<String>> = ips
                        .iter()
                        .map(|ip| {
                            vec![
                                version(ip).to_string(),
                                ip.ip.clone(),
                                kind(ip).to_string(),
                                network(ip),
                                ip.region.clone().unwrap_or_default(),
                                ip.created_at.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &["VERSION", "IP", "TYPE", "NETWORK", "REGION", "CREATED AT"],
                            &rows
                        )
                    );
                }
            }
            IpsCommand::AllocateV6 {
                app,
                private,
                org,
                network,
                region,
            } => {
                let name = app.name()?;
                if !private && (org.is_some() || network.is_some()) {
                    bail!(
                        "--org and --network choose who reaches a private address: add --private"
                    );
                }
                let req = AllocateIpRequest {
                    r#type: if private { "private_v6" } else { "v6" }.into(),
                    region,
                    org_slug: org,
                    network,
                    service_name: None,
                };
                allocate(&client, &name, req).await?;
            }
            IpsCommand::AllocateV4 {
                app,
                shared,
                region,
            } => {
                let name = app.name()?;
                let req = AllocateIpRequest {
                    r#type: if shared { "shared_v4" } else { "v4" }.into(),
                    region,
                    ..AllocateIpRequest::default()
                };
                allocate(&client, &name, req).await?;
            }
            IpsCommand::Release { ips, app } => {
                let name = app.name()?;
                for ip in &ips {
                    if ip.parse::<std::net::IpAddr>().is_err() {
                        bail!("'{ip}' is not an IP address");
                    }
                }
                for ip in ips {
                    client
                        .release_ip(&name, &ip)
                        .await
                        .map_err(|e| explain(e, &name, Some(&ip)))?;
                    println!("Released {ip} from {name}");
                }
            }
        }
        Ok(exit::OK)
    })?
}
