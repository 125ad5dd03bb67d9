//! `hangar scale count|show`.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Subcommand;

use super::ctx::{ApiArgs, block_on, confirm, table};
use super::target::AppArgs;
use crate::exit;

#[derive(Debug, Subcommand)]
pub(crate) enum ScaleCommand {
    /// Set how many machines a process group has: `N` (the default group, or `-g`), or
    /// `GROUP=N` pairs.
    Count {
        /// `N` or `GROUP=N` (several).
        #[arg(required = true)]
        counts: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
        /// Process group for a bare `N`.
        #[arg(short = 'g', long = "process-group")]
        group: Option<String>,
        /// Regions (comma-separated); `N` is then per region.
        #[arg(short = 'r', long = "region", value_delimiter = ',')]
        regions: Vec<String>,
        /// At most this many per region.
        #[arg(long)]
        max_per_region: Option<usize>,
        /// New machines each get a new volume, even where unattached volumes of the group's
        /// name exist (groups with `[mounts]`; by default those are taken first).
        #[arg(long)]
        with_new_volumes: bool,
        /// Do not ask (required to destroy machines when not on a terminal).
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Machines per process group and region.
    Show {
        #[command(flatten)]
        app: AppArgs,
        /// Print JSON.
        #[arg(long, short = 'j')]
        json: bool,
    },
}

pub(crate) fn run(c: ScaleCommand, api: &ApiArgs) -> anyhow::Result<u8> {
    let client = api.client()?;
    block_on(async move {
        match c {
            ScaleCommand::Count {
                counts,
                app,
                group,
                regions,
                max_per_region,
                with_new_volumes,
                yes,
            } => {
                let name = app.name()?;
                // New volumes are sized as fly.toml's [mounts] says, when there is one.
                let manifest = app
                    .manifest_path()
                    .and_then(|p| hangar_manifest::load(&p).ok())
                    .map(|m| m.config);
                let machines = client.machines(&name).await?;
                let default_group = group.unwrap_or_else(|| {
                    machines
                        .iter()
                        .filter_map(|m| {
                            m.config
                                .as_ref()?
                                .metadata
                                .get("fly_process_group")
                                .cloned()
                        })
                        .min()
                        .unwrap_or_else(|| "app".into())
                });
                let mut wanted: BTreeMap<String, usize> = BTreeMap::new();
                for c in &counts {
                    let (g, n) = match c.split_once('=') {
                        Some((g, n)) => (g.to_string(), n),
                        None => (default_group.clone(), c.as_str()),
                    };
                    let Ok(n) = n.parse::<usize>() else {
                        bail!("'{c}' is not a count (N or GROUP=N)");
                    };
                    wanted.insert(g, n);
                }
                for (g, n) in wanted {
                    let existing: Vec<String> = machines
                        .iter()
                        .filter(|m| {
                            m.config
                                .as_ref()
                                .and_then(|c| c.metadata.get("fly_process_group"))
                                .is_some_and(|x| *x == g)
                        })
                        .map(|m| m.region.clone())
                        .collect();
                    let primary = machines
                        .iter()
                        .find_map(|m| m.config.as_ref()?.env.get("PRIMARY_REGION").cloned())
                        .unwrap_or_else(|| "local".into());
                    let targets = hangar_client::scale::targets(
                        n,
                        &regions,
                        &existing,
                        &primary,
                        max_per_region,
                    );
                    let plan = hangar_client::scale::plan(&machines, &g, &targets);
                    if !plan.destroy.is_empty()
                        && !yes
                        && !confirm(
                            &format!(
                                "Scaling '{g}' destroys {} machine(s); continue?",
                                plan.destroy.len()
                            ),
                            "--yes",
                        )?
                    {
                        bail!("nothing was changed");
                    }
                    let volume_name = machines
                        .iter()
                        .filter(|m| {
                            m.config
                                .as_ref()
                                .and_then(|c| c.metadata.get("fly_process_group"))
                                .is_some_and(|x| *x == g)
                        })
                        .find_map(|m| m.config.as_ref()?.mounts.first()?.name.clone());
                    let mut vols = match (&manifest, &volume_name) {
                        (Some(c), Some(v)) => hangar_client::scale::volume_options(c, v),
                        _ => hangar_client::scale::VolumeOptions::default(),
                    };
                    vols.always_new = with_new_volumes;
                    let done = hangar_client::scale::apply_with(
                        &client, &name, &g, &machines, &plan, &vols,
                    )
                    .await?;
                    for v in &done.volumes_created {
                        println!(
                            "Created volume {} ({}, {} GB) in {}",
                            v.id, v.name, v.size_gb, v.region
                        );
                    }
                    for v in &done.volumes_reused {
                        println!("Using unattached volume {v}");
                    }
                    for id in &done.created {
                        println!("Created machine {id} in group '{g}'");
                    }
                    for id in &done.destroyed {
                        println!("Destroyed machine {id} of group '{g}'");
                    }
                    for (m, v) in &done.volumes_kept {
                        println!(
                            "Kept volume {v} of machine {m} (unattached now; new machines of '{g}' \
                             take it, or remove it with `hangar volumes destroy {v} -a {name}`)"
                        );
                    }
                }
            }
            ScaleCommand::Show { app, json } => {
                let name = app.name()?;
                let machines = client.machines(&name).await?;
                let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
                for m in machines.iter().filter(|m| m.state.as_str() != "destroyed") {
                    let g = m
                        .config
                        .as_ref()
                        .and_then(|c| c.metadata.get("fly_process_group").cloned())
                        .unwrap_or_default();
                    *counts.entry((g, m.region.clone())).or_insert(0) += 1;
                }
                if json {
                    let v: Vec<serde_json::Value> = counts
                        .iter()
                        .map(|((g, r), n)| serde_json::json!({"process": g, "region": r, "count": n}))
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    let rows: Vec<Vec<String>> = counts
                        .iter()
                        .map(|((g, r), n)| vec![g.clone(), n.to_string(), r.clone()])
                        .collect();
                    print!("{}", table(&["PROCESS", "COUNT", "REGION"], &rows));
                }
            }
        }
        Ok(exit::OK)
    })?
}
