//! `hangar volumes create|list|show|extend|destroy|snapshots list|create`.

use anyhow::bail;
use clap::{ArgAction, Subcommand};
use hangar_api_types::{CreateVolumeRequest, Volume, VolumeSnapshot};

use super::ctx::{ApiArgs, block_on, table};
use super::target::AppArgs;
use crate::exit;

#[derive(Debug, Subcommand)]
pub(crate) enum VolumesCommand {
    /// Create a volume (blank, restored from a snapshot, or a copy of another volume).
    Create {
        /// Volume name (lowercase letters, digits, underscores; `[mounts] source` picks by it).
        name: String,
        #[command(flatten)]
        app: AppArgs,
        /// Size in GB.
        #[arg(short = 's', long = "size", default_value_t = 1)]
        size: i64,
        /// Region (default: the platform's).
        #[arg(short = 'r', long)]
        region: Option<String>,
        /// Record the volume as not encrypted.
        #[arg(long)]
        no_encryption: bool,
        /// Restore this snapshot into the new volume.
        #[arg(long, value_name = "SNAPSHOT")]
        snapshot_id: Option<String>,
        /// Copy this volume (a fork).
        #[arg(long, value_name = "VOLUME")]
        source_volume_id: Option<String>,
        /// Days snapshots are kept (at most this many are kept).
        #[arg(long, default_value_t = 5)]
        snapshot_retention: i64,
        /// Take a snapshot every day.
        #[arg(long, default_value_t = true, action = ArgAction::Set)]
        scheduled_snapshots: bool,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// List the app's volumes.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        app: AppArgs,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// Show one volume.
    Show {
        /// Volume id.
        id: String,
        #[command(flatten)]
        app: AppArgs,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// Grow a volume (volumes only grow).
    Extend {
        /// Volume id.
        id: String,
        #[command(flatten)]
        app: AppArgs,
        /// The new size in GB.
        #[arg(short = 's', long = "size", required = true)]
        size: i64,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// Destroy a volume and its snapshots (its machine must be destroyed first).
    #[command(alias = "rm")]
    Destroy {
        /// Volume id.
        id: String,
        #[command(flatten)]
        app: AppArgs,
        /// Do not ask (required when not on a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// A volume's snapshots.
    #[command(subcommand)]
    Snapshots(SnapshotsCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotsCommand {
    /// List a volume's snapshots, newest first.
    #[command(alias = "ls")]
    List {
        /// Volume id.
        id: String,
        #[command(flatten)]
        app: AppArgs,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// Take a snapshot of a volume now.
    Create {
        /// Volume id.
        id: String,
        #[command(flatten)]
        app: AppArgs,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
}

fn volume_rows(vs: &[Volume]) -> String {
    let rows: Vec<Vec<String>> = vs
        .iter()
        .map(|v| {
            vec![
                v.id.clone(),
                v.state.clone(),
                v.name.clone(),
                format!("{}GB", v.size_gb),
                v.region.clone(),
                v.zone.clone(),
                if v.encrypted { "true" } else { "false" }.into(),
                v.attached_machine_id.clone().unwrap_or_default(),
                v.created_at.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATE",
            "NAME",
            "SIZE",
            "REGION",
            "ZONE",
            "ENCRYPTED",
            "ATTACHED VM",
            "CREATED AT",
        ],
        &rows,
    )
}

fn show(v: &Volume) -> String {
    let mut out = String::new();
    let mut line = |k: &str, val: String| out.push_str(&format!("{k:<20} = {val}\n"));
    line("ID", v.id.clone());
    line("Name", v.name.clone());
    line("State", v.state.clone());
    line("Size", format!("{}GB", v.size_gb));
    line("Region", v.region.clone());
    line("Zone", v.zone.clone());
    line("Encrypted", v.encrypted.to_string());
    line(
        "Attached VM",
        v.attached_machine_id.clone().unwrap_or_default(),
    );
    line("Created at", v.created_at.clone());
    line(
        "Snapshot retention",
        v.snapshot_retention
            .map(|d| format!("{d} days"))
            .unwrap_or_default(),
    );
    line(
        "Scheduled snapshots",
        v.auto_backup_enabled
            .map(|b| b.to_string())
            .unwrap_or_default(),
    );
    out
}

fn snapshot_rows(ss: &[VolumeSnapshot]) -> String {
    let rows: Vec<Vec<String>> = ss
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.status.clone(),
                s.size.to_string(),
                s.created_at.clone(),
                s.retention_days
                    .map(|d| format!("{d} days"))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["ID", "STATUS", "SIZE", "CREATED AT", "RETAINED FOR"],
        &rows,
    )
}

pub(crate) fn run(c: VolumesCommand, api: &ApiArgs) -> anyhow::Result<u8> {
    let client = api.client()?;
    block_on(async move {
        match c {
            VolumesCommand::Create {
                name,
                app,
                size,
                region,
                no_encryption,
                snapshot_id,
                source_volume_id,
                snapshot_retention,
                scheduled_snapshots,
                json,
            } => {
                let app = app.name()?;
                let req = CreateVolumeRequest {
                    name,
                    region: region.unwrap_or_default(),
                    size_gb: Some(size),
                    encrypted: Some(!no_encryption),
                    snapshot_retention: Some(snapshot_retention),
                    auto_backup_enabled: Some(scheduled_snapshots),
                    snapshot_id,
                    source_volume_id,
                    ..CreateVolumeRequest::default()
                };
                let v = client.create_volume(&app, &req).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    print!("{}", show(&v));
                }
            }
            VolumesCommand::List { app, json } => {
                let vs = client.volumes(&app.name()?).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&vs)?);
                } else {
                    print!("{}", volume_rows(&vs));
                }
            }
            VolumesCommand::Show { id, app, json } => {
                let v = client.volume(&app.name()?, &id).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    print!("{}", show(&v));
                }
            }
            VolumesCommand::Extend {
                id,
                app,
                size,
                json,
            } => {
                let out = client.extend_volume(&app.name()?, &id, size).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&out)?);
                } else {
                    print!("{}", show(&out.volume));
                    if out.needs_restart {
                        println!(
                            "Restart the machine ({}) to be sure it sees the new size.",
                            out.volume.attached_machine_id.unwrap_or_default()
                        );
                    }
                }
            }
            VolumesCommand::Destroy { id, app, yes } => {
                if !yes {
                    bail!(
                        "destroying {id} deletes its data and its snapshots: pass --yes to confirm"
                    );
                }
                client.destroy_volume(&app.name()?, &id).await?;
                println!("Destroyed volume {id}");
            }
            VolumesCommand::Snapshots(SnapshotsCommand::List { id, app, json }) => {
                let ss = client.volume_snapshots(&app.name()?, &id).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&ss)?);
                } else {
                    print!("{}", snapshot_rows(&ss));
                }
            }
            VolumesCommand::Snapshots(SnapshotsCommand::Create { id, app, json }) => {
                let s = client.create_volume_snapshot(&app.name()?, &id).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                } else {
                    println!("Snapshot {} of volume {id} is being taken", s.id);
                }
            }
        }
        Ok(exit::OK)
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_print_as_tables() {
        let v = Volume {
            id: "vol_1".into(),
            name: "data".into(),
            state: "created".into(),
            size_gb: 3,
            region: "local".into(),
            zone: "h".into(),
            encrypted: true,
            attached_machine_id: Some("m1".into()),
            created_at: "2024-01-01T00:00:00Z".into(),
            ..Volume::default()
        };
        let t = volume_rows(std::slice::from_ref(&v));
        assert!(t.starts_with("ID "), "{t}");
        assert!(t.contains("vol_1  created  data  3GB"), "{t}");
        assert!(
            show(&v).contains("Attached VM          = m1\n"),
            "{}",
            show(&v)
        );
    }
}
