//! `hangar scale count|vm|memory|show`.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Subcommand;

use hangar_client::machine::GuestFlags;
use hangar_client::scale::VmEvent;

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
    /// Change the VM of every machine of the app (or of a process group) to a size preset,
    /// one machine at a time: each running one is waited for until it has started again.
    Vm {
        /// VM size preset: shared-cpu-1x…8x, performance-1x…16x (an unknown one lists them
        /// all).
        size: Option<String>,
        #[command(flatten)]
        app: AppArgs,
        /// Process group to change (needed when the app has several).
        #[arg(short = 'g', long = "process-group")]
        group: Option<String>,
        /// Memory: a number of MB, or e.g. 512mb, 2gb (after the size's own).
        #[arg(long, visible_alias = "memory")]
        vm_memory: Option<String>,
    },
    /// Change the memory of every machine of the app (or of a process group), one machine at
    /// a time.
    Memory {
        /// Memory: a number of MB, or e.g. 512mb, 2gb.
        memory: String,
        #[command(flatten)]
        app: AppArgs,
        /// Process group to change (needed when the app has several).
        #[arg(short = 'g', long = "process-group")]
        group: Option<String>,
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
            ScaleCommand::Vm {
                size,
                app,
                group,
                vm_memory,
            } => {
                if size.is_none() && vm_memory.is_none() {
                    bail!(
                        "which size? give a preset (e.g. `hangar scale vm shared-cpu-2x`) or --vm-memory"
                    );
                }
                let flags = GuestFlags {
                    size,
                    memory: vm_memory,
                    ..GuestFlags::default()
                };
                return scale_vm(&client, &app, group.as_deref(), &flags).await;
            }
            ScaleCommand::Memory { memory, app, group } => {
                hangar_client::machine::memory_mb("memory", &memory)?;
                let flags = GuestFlags {
                    memory: Some(memory),
                    ..GuestFlags::default()
                };
                return scale_vm(&client, &app, group.as_deref(), &flags).await;
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

/// `scale vm|memory`: every machine of the group gets the new guest, one at a time.
async fn scale_vm(
    client: &hangar_client::Client,
    app: &AppArgs,
    group: Option<&str>,
    flags: &GuestFlags,
) -> anyhow::Result<u8> {
    // Sizes and memory are checked before anything is asked of the API.
    hangar_client::machine::guest(None, flags)?;
    let name = app.name()?;
    let machines = client.machines(&name).await?;
    let (group, targets) = hangar_client::scale::vm_targets(&machines, group)?;
    let plan = hangar_client::scale::vm_plan(&targets, flags)?;
    let Some(first) = plan.first().and_then(|(_, c)| c.guest.clone()) else {
        bail!("no machines to change");
    };
    if let Some(w) = hangar_manifest::guest::bounds_warning(&first) {
        eprintln!("Note: {w}");
    }
    let mut on = |e: VmEvent| match e {
        VmEvent::Updating { id, n, of } => eprintln!("Updating machine {id} ({n}/{of})"),
        VmEvent::Updated { id, started: true } => eprintln!("  {id} has started again"),
        VmEvent::Updated { id, started: false } => {
            eprintln!("  {id} updated (it was not running; left stopped)")
        }
        VmEvent::Unchanged { id } => eprintln!("Machine {id} has that VM already"),
    };
    hangar_client::scale::roll_vm(
        client,
        &name,
        plan,
        std::time::Duration::from_secs(300),
        &mut on,
    )
    .await?;
    let size = hangar_client::machine::size_name(&first);
    match &group {
        Some(g) => println!("Scaled VM Type for '{g}' to '{size}'"),
        None => println!("Scaled VM Type to '{size}'"),
    }
    let mb = first.memory_mb.unwrap_or(256);
    println!("{:>15}: {}", "CPU Cores", first.cpus.unwrap_or(1));
    println!(
        "{:>15}: {}",
        "Memory",
        if mb >= 1024 && mb % 1024 == 0 {
            format!("{} GB", mb / 1024)
        } else {
            format!("{mb} MB")
        }
    );
    Ok(exit::OK)
}
