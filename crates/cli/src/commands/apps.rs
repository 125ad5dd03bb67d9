//! `hangar apps create|list|destroy`, `hangar platform regions`, `hangar tokens create`.

use anyhow::bail;
use clap::Subcommand;

use super::ctx::{ApiArgs, block_on, table};
use crate::exit;

#[derive(Debug, Subcommand)]
pub(crate) enum AppsCommand {
    /// Create an app.
    Create {
        /// App name (lowercase letters, digits, dashes).
        name: String,
        /// Org to create it in.
        #[arg(short = 'o', long, default_value = "personal")]
        org: String,
        /// Private network (default: the org's).
        #[arg(long)]
        network: Option<String>,
    },
    /// List apps.
    List {
        /// Only this org's.
        #[arg(short = 'o', long)]
        org: Option<String>,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// Destroy an app and every machine of it.
    Destroy {
        /// App name.
        name: String,
        /// Do not ask (required when not on a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

pub(crate) fn run(c: AppsCommand, api: &ApiArgs) -> anyhow::Result<u8> {
    let client = api.client()?;
    block_on(async move {
        match c {
            AppsCommand::Create { name, org, network } => {
                client.create_app(&name, &org, network.as_deref()).await?;
                println!("New app created: {name}");
            }
            AppsCommand::List { org, json } => {
                let apps = client.apps(org.as_deref()).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&apps.apps)?);
                } else {
                    let rows: Vec<Vec<String>> = apps
                        .apps
                        .iter()
                        .map(|a| {
                            vec![
                                a.name.clone(),
                                a.machine_count.unwrap_or(0).to_string(),
                                a.network.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    print!("{}", table(&["NAME", "MACHINES", "NETWORK"], &rows));
                }
            }
            AppsCommand::Destroy { name, yes } => {
                if !yes {
                    bail!("destroying {name} deletes every machine of it: pass --yes to confirm");
                }
                client.delete_app(&name).await?;
                println!("Destroyed app {name}");
            }
        }
        Ok(exit::OK)
    })?
}

#[derive(Debug, Subcommand)]
pub(crate) enum PlatformCommand {
    /// The regions machines can run in.
    Regions {
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// The VM sizes a machine's guest or a `[[vm]] size` can name
    VmSizes {
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
}

/// One preset as `platform vm-sizes` shows it.
#[derive(Debug)]
struct VmSize {
    name: String,
    cpu_kind: String,
    cpu_cores: i64,
    memory_mb: i64,
    gpu_kind: Option<String>,
    gpus: Option<i64>,
}

impl VmSize {
    /// The reference's field names.
    fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "name": self.name,
            "cpu_kind": self.cpu_kind,
            "cpu_cores": self.cpu_cores,
            "memory_mb": self.memory_mb,
            "memory_gb": self.memory_mb as f64 / 1024.0,
        });
        if let Some(k) = &self.gpu_kind {
            v["gpu_kind"] = k.as_str().into();
            v["gpus"] = self.gpus.unwrap_or(1).into();
        }
        v
    }
}

fn vm_sizes() -> Vec<VmSize> {
    hangar_manifest::guest::preset_names()
        .into_iter()
        .filter_map(|name| {
            let g = hangar_manifest::guest::preset(&name)?;
            Some(VmSize {
                cpu_kind: g.cpu_kind.unwrap_or_default(),
                cpu_cores: g.cpus.unwrap_or_default(),
                memory_mb: g.memory_mb.unwrap_or_default(),
                gpu_kind: g.gpu_kind,
                gpus: g.gpus,
                name,
            })
        })
        .collect()
}

/// `512 MB`, `2 GB`: as the reference prints sizes.
fn memory_text(mb: i64) -> String {
    if mb >= 1024 && mb % 1024 == 0 {
        format!("{} GB", mb / 1024)
    } else {
        format!("{mb} MB")
    }
}

pub(crate) fn platform(c: PlatformCommand, api: &ApiArgs) -> anyhow::Result<u8> {
    match c {
        PlatformCommand::Regions { json } => regions(json, api),
        PlatformCommand::VmSizes { json } => {
            print_vm_sizes(json)?;
            Ok(exit::OK)
        }
    }
}

/// The presets are the platform's own (the API checks guests against the same list): no
/// call is needed.
fn print_vm_sizes(json: bool) -> anyhow::Result<()> {
    let sizes = vm_sizes();
    if json {
        let list: Vec<serde_json::Value> = sizes.iter().map(VmSize::json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        let rows: Vec<Vec<String>> = sizes
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.cpu_cores.to_string(),
                    memory_text(s.memory_mb),
                    s.gpu_kind.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["NAME", "CPU CORES", "MEMORY", "GPU MODEL"], &rows)
        );
    }
    Ok(())
}

fn regions(json: bool, api: &ApiArgs) -> anyhow::Result<u8> {
    let client = api.client()?;
    block_on(async move {
        let r = client.regions().await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            let rows: Vec<Vec<String>> = r
                .regions
                .iter()
                .map(|g| vec![g.code.clone(), g.name.clone()])
                .collect();
            print!("{}", table(&["CODE", "NAME"], &rows));
        }
        Ok(exit::OK)
    })?
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Create an API token for an org (needs the admin token).
    Create {
        /// The org; created if it does not exist.
        #[arg(short = 'o', long, default_value = "personal")]
        org: String,
    },
}

pub(crate) fn tokens(c: TokensCommand, api: &ApiArgs) -> anyhow::Result<u8> {
    let client = api.client()?;
    block_on(async move {
        let TokensCommand::Create { org } = c;
        if let Err(e) = client.create_org(&org).await
            && e.status() != Some(422)
            && e.status() != Some(409)
        {
            return Err(e.into());
        }
        println!("{}", client.create_token(&org).await?);
        Ok(exit::OK)
    })?
}
