//! `hangar wireguard create|list|remove` (PLATFORM.md §4.5): WireGuard peers of an org. The
//! key pair is made here; only the public key goes to the API. `create` writes a wg-quick
//! config (mode 0600: it holds the private key) for `wg-quick up`, or for
//! `WG_QUICK_USERSPACE_IMPLEMENTATION=hangar-wg wg-quick up` where the kernel has no
//! WireGuard.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;

use super::ctx::{ApiArgs, block_on, table};
use crate::exit;

#[derive(Debug, Subcommand)]
pub(crate) enum WireguardCommand {
    /// Add a peer and write its wg-quick config.
    Create {
        /// Org slug (default: personal, an org token's own org).
        org: Option<String>,
        /// Region of the gateway (default: the API host's).
        region: Option<String>,
        /// Peer name: 1-15 of a-z, 0-9, '-' (the interface name on your side).
        name: Option<String>,
        /// Where to write the config (default: <name>.conf; '-' for stdout).
        file: Option<PathBuf>,
        /// Join this custom network of the org instead of its default one.
        #[arg(long)]
        network: Option<String>,
    },
    /// List the org's peers.
    #[command(alias = "ls")]
    List {
        /// Org slug (default: personal).
        org: Option<String>,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// Remove a peer (it is cut off at once).
    #[command(alias = "rm")]
    Remove {
        /// Org slug (default: personal).
        org: Option<String>,
        /// Peer name.
        name: Option<String>,
    },
}

fn org_or_default(org: Option<String>) -> String {
    org.unwrap_or_else(|| "personal".into())
}

pub(crate) fn run(c: WireguardCommand, api: &ApiArgs) -> anyhow::Result<u8> {
    let client = api.client()?;
    block_on(async move {
        match c {
            WireguardCommand::Create {
                org,
                region,
                name,
                file,
                network,
            } => {
                let Some(name) = name else {
                    eprintln!(
                        "error: a peer name is required: hangar wireguard create [org] [region] <name> [file]"
                    );
                    return Ok(exit::UNREADABLE);
                };
                let org = org_or_default(org);
                let file = file.unwrap_or_else(|| PathBuf::from(format!("{name}.conf")));
                let to_stdout = file.as_os_str() == "-";
                if !to_stdout && file.exists() {
                    eprintln!(
                        "error: {} exists; name another file or remove it",
                        file.display()
                    );
                    return Ok(exit::UNREADABLE);
                }
                let (peer, keys) = client
                    .create_wireguard_peer(&org, &name, region.as_deref(), network.as_deref())
                    .await?;
                let config = hangar_client::wireguard::wg_quick_config(&peer, &keys.private_key);
                if to_stdout {
                    print!("{config}");
                } else {
                    write_private(&file, &config)?;
                    eprintln!(
                        "Peer {} of {} has address {}; its config (with the private key, shown \
                         nowhere else) is in {}.\nBring it up with: wg-quick up {}",
                        peer.name,
                        peer.org,
                        peer.peer_ip,
                        file.display(),
                        file.display()
                    );
                }
            }
            WireguardCommand::List { org, json } => {
                let peers = client.wireguard_peers(&org_or_default(org)).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&peers)?);
                } else {
                    let rows: Vec<Vec<String>> = peers
                        .iter()
                        .map(|p| {
                            vec![
                                p.name.clone(),
                                p.region.clone(),
                                p.network.clone(),
                                p.peer_ip.clone(),
                                p.created_at.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &["NAME", "REGION", "NETWORK", "PEER IP", "CREATED AT"],
                            &rows
                        )
                    );
                }
            }
            WireguardCommand::Remove { org, name } => {
                let Some(name) = name else {
                    bail!("a peer name is required: hangar wireguard remove [org] <name>");
                };
                let org = org_or_default(org);
                client.remove_wireguard_peer(&org, &name).await?;
                println!("Removed WireGuard peer {name} of {org}");
            }
        }
        Ok(exit::OK)
    })?
}

/// Writes `text` to a new file only its owner can read.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
