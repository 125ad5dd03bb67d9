//! `scale count`: machines of a process group created (cloned from the group's newest
//! config) or destroyed (stopped ones first) until each region has its count.
//!
//! With regions given, `count` is per region (the reference's `fly scale count 3 --region
//! a,b` makes three in each); without, `count` is the group's total, spread over the regions
//! it runs in (or the primary region), round robin. `max_per_region` caps every region.
//!
//! Groups whose machines mount a volume (`[mounts]`): every new machine gets a volume of its
//! own, named like the group's (the mount's `source`), in its region: an unattached one of
//! that name there, else a new one (the reference's `--with-new-volumes`; `always_new` skips
//! the unattached ones). Its size is the fly.toml's `initial_size` when known, else the size
//! of the group's newest machine's volume. Destroying machines keeps their volumes (as the
//! reference does); [`Applied::volumes_kept`] says which, so the caller can tell the user.
//!
//! `scale vm|memory`: every machine of a process group gets the new guest ([`vm_plan`]), one
//! at a time ([`roll_vm`]): a running machine is waited for until its new version is started
//! before the next is touched; a stopped one is updated and stays stopped.

use std::collections::BTreeMap;

use hangar_api_types::{
    CreateMachineRequest, CreateVolumeRequest, Machine, MachineConfig, MachineState, Volume,
};

use crate::api::{Client, ClientError};
use crate::deploy::free_volume;
use crate::machine::{GuestFlags, InputError, guest};

/// What to change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// `(region, how many)` to create.
    pub create: Vec<(String, usize)>,
    /// Machines to destroy.
    pub destroy: Vec<String>,
}

fn group_of(m: &Machine) -> Option<String> {
    m.config
        .as_ref()
        .and_then(|c| c.metadata.get("fly_process_group").cloned())
}

/// Target count per region.
pub fn targets(
    count: usize,
    regions: &[String],
    existing: &[String],
    primary: &str,
    max_per_region: Option<usize>,
) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    if !regions.is_empty() {
        for r in regions {
            out.insert(r.clone(), count);
        }
    } else {
        let mut rs: Vec<String> = existing.to_vec();
        rs.sort();
        rs.dedup();
        if rs.is_empty() {
            rs.push(primary.to_string());
        }
        for i in 0..count {
            *out.entry(rs[i % rs.len()].clone()).or_insert(0) += 1;
        }
        for r in rs {
            out.entry(r).or_insert(0);
        }
    }
    if let Some(max) = max_per_region {
        for v in out.values_mut() {
            *v = (*v).min(max);
        }
    }
    out
}

/// The plan for `group` of `machines` to reach `targets`.
pub fn plan(machines: &[Machine], group: &str, targets: &BTreeMap<String, usize>) -> Plan {
    let mut p = Plan::default();
    for (region, want) in targets {
        let mut here: Vec<&Machine> = machines
            .iter()
            .filter(|m| group_of(m).as_deref() == Some(group) && m.region == *region)
            .filter(|m| !matches!(m.state, MachineState::Destroyed | MachineState::Destroying))
            .collect();
        if here.len() < *want {
            p.create.push((region.clone(), want - here.len()));
        } else {
            // Stopped machines go first, then the newest.
            here.sort_by_key(|m| {
                (
                    m.state == MachineState::Started,
                    std::cmp::Reverse(m.created_at.clone()),
                )
            });
            p.destroy
                .extend(here.iter().take(here.len() - want).map(|m| m.id.clone()));
        }
    }
    p
}

/// How new machines of a group that mounts a volume get theirs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeOptions {
    /// Size of new volumes in GB (fly.toml's `initial_size`); `None`: the size of the volume
    /// of the machine the new ones are copied from (1 when that is unknown).
    pub size_gb: Option<i64>,
    /// `snapshot_retention` of new volumes (days); `None`: the copied machine's volume's.
    pub snapshot_retention: Option<i64>,
    /// `scheduled_snapshots` of new volumes; `None`: the copied machine's volume's.
    pub scheduled_snapshots: Option<bool>,
    /// Make a new volume for every new machine even where unattached ones of the name exist.
    pub always_new: bool,
}

/// What the fly.toml's `[mounts]` entry for volumes named `name` says about new ones.
pub fn volume_options(config: &hangar_manifest::Config, name: &str) -> VolumeOptions {
    let entry = config
        .mounts
        .iter()
        .find(|m| m.source.as_deref() == Some(name));
    VolumeOptions {
        size_gb: entry
            .and_then(|e| e.initial_size.as_deref())
            .and_then(|s| hangar_manifest::units::volume_gb(s).ok())
            .map(|g| g.max(1)),
        snapshot_retention: entry.and_then(|e| e.snapshot_retention),
        scheduled_snapshots: entry.and_then(|e| e.scheduled_snapshots),
        always_new: false,
    }
}

/// What [`apply_with`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Machines created.
    pub created: Vec<String>,
    /// Machines destroyed.
    pub destroyed: Vec<String>,
    /// Volumes made for new machines.
    pub volumes_created: Vec<Volume>,
    /// Unattached volumes new machines took.
    pub volumes_reused: Vec<String>,
    /// `(machine, volume)`: volumes of destroyed machines, kept (now unattached).
    pub volumes_kept: Vec<(String, String)>,
}

/// Carries out a plan; the new machines get the group's newest config.
pub async fn apply(
    client: &Client,
    app: &str,
    group: &str,
    machines: &[Machine],
    p: &Plan,
) -> Result<(Vec<String>, Vec<String>), ClientError> {
    let a = apply_with(client, app, group, machines, p, &VolumeOptions::default()).await?;
    Ok((a.created, a.destroyed))
}

/// [`apply`], with volumes for new machines of a group that mounts one made as `vols` says.
pub async fn apply_with(
    client: &Client,
    app: &str,
    group: &str,
    machines: &[Machine],
    p: &Plan,
    vols: &VolumeOptions,
) -> Result<Applied, ClientError> {
    let mut out = Applied::default();
    let template = machines
        .iter()
        .filter(|m| group_of(m).as_deref() == Some(group))
        .filter(|m| !matches!(m.state, MachineState::Destroyed | MachineState::Destroying))
        .max_by_key(|m| m.updated_at.clone())
        .or_else(|| {
            machines
                .iter()
                .filter(|m| group_of(m).as_deref() == Some(group))
                .max_by_key(|m| m.updated_at.clone())
        })
        .and_then(|m| m.config.clone())
        .ok_or_else(|| ClientError::Api {
            status: 404,
            message: format!("no machine of group '{group}' to copy: deploy first"),
            code: None,
        })?;
    let mount = template.mounts.first().cloned();
    let mut volumes: Vec<Volume> = Vec::new();
    let mut base = VolumeOptions::default();
    if let Some(m) = &mount
        && p.create.iter().any(|(_, n)| *n > 0)
    {
        volumes = client.volumes(app).await?;
        // The copied machine's volume: where size and snapshot settings default from.
        if let Some(v) = m
            .volume
            .as_deref()
            .and_then(|id| volumes.iter().find(|v| v.id == id))
        {
            base = VolumeOptions {
                size_gb: Some(v.size_gb),
                snapshot_retention: v.snapshot_retention,
                scheduled_snapshots: v.auto_backup_enabled,
                always_new: false,
            };
        }
    }
    let mut taken = std::collections::HashSet::new();
    for (region, n) in &p.create {
        for _ in 0..*n {
            let mut config = template.clone();
            if let Some(m) = &mount {
                let name = m
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .or_else(|| {
                        let id = m.volume.as_deref()?;
                        volumes.iter().find(|v| v.id == id).map(|v| v.name.clone())
                    })
                    .ok_or_else(|| ClientError::Api {
                        status: 422,
                        message: format!(
                            "group '{group}' mounts a volume without a name: can not tell which volumes new machines take"
                        ),
                        code: None,
                    })?;
                let free = (!vols.always_new)
                    .then(|| {
                        volumes
                            .iter()
                            .find(|v| !taken.contains(&v.id) && free_volume(v, &name, Some(region)))
                    })
                    .flatten()
                    .map(|v| v.id.clone());
                let id = match free {
                    Some(id) => {
                        out.volumes_reused.push(id.clone());
                        id
                    }
                    None => {
                        let v = client
                            .create_volume(
                                app,
                                &CreateVolumeRequest {
                                    name: name.clone(),
                                    region: region.clone(),
                                    size_gb: Some(vols.size_gb.or(base.size_gb).unwrap_or(1)),
                                    snapshot_retention: vols
                                        .snapshot_retention
                                        .or(base.snapshot_retention),
                                    auto_backup_enabled: vols
                                        .scheduled_snapshots
                                        .or(base.scheduled_snapshots),
                                    ..CreateVolumeRequest::default()
                                },
                            )
                            .await?;
                        let id = v.id.clone();
                        out.volumes_created.push(v);
                        id
                    }
                };
                taken.insert(id.clone());
                let mut mine = m.clone();
                mine.volume = Some(id);
                mine.name = Some(name);
                config.mounts = vec![mine];
            }
            let m = client
                .create_machine(
                    app,
                    &CreateMachineRequest {
                        config,
                        region: Some(region.clone()),
                        ..CreateMachineRequest::default()
                    },
                )
                .await?;
            out.created.push(m.id);
        }
    }
    // Up before anything goes (a machine still being made can not be destroyed either).
    for id in &out.created {
        client
            .wait(
                app,
                id,
                "started",
                None,
                std::time::Duration::from_secs(120),
            )
            .await?;
    }
    for id in &p.destroy {
        client.destroy(app, id, true).await?;
        out.destroyed.push(id.clone());
        if let Some(v) = machines
            .iter()
            .find(|m| m.id == *id)
            .and_then(|m| m.config.as_ref()?.mounts.first()?.volume.clone())
        {
            out.volumes_kept.push((id.clone(), v));
        }
    }
    Ok(out)
}

/// The group `scale vm|memory` changes and its machines: `group` when given; else, as the
/// reference, the app's one process group (several need `-g`), or every machine when none
/// has a group (machines made by `machine run`). Release-command machines and destroyed ones
/// never count.
pub fn vm_targets<'a>(
    machines: &'a [Machine],
    group: Option<&str>,
) -> Result<(Option<String>, Vec<&'a Machine>), InputError> {
    let live: Vec<&Machine> = machines
        .iter()
        .filter(|m| !matches!(m.state, MachineState::Destroyed | MachineState::Destroying))
        .filter(|m| group_of(m).as_deref() != Some("fly_app_release_command"))
        .collect();
    let group = match group {
        Some(g) => Some(g.to_string()),
        None => {
            let mut groups: Vec<String> = live.iter().filter_map(|m| group_of(m)).collect();
            groups.sort();
            groups.dedup();
            if groups.len() > 1 {
                return Err(InputError(format!(
                    "the app has several process groups ({}): pick one with -g/--process-group",
                    groups.join(", ")
                )));
            }
            groups.pop()
        }
    };
    let chosen: Vec<&Machine> = live
        .into_iter()
        .filter(|m| group.is_none() || group_of(m) == group)
        .collect();
    if chosen.is_empty() {
        return Err(InputError(match &group {
            Some(g) => format!("no machines in process group '{g}' (see `hangar status`)"),
            None => "the app has no machines".to_string(),
        }));
    }
    Ok((group, chosen))
}

/// Each machine's config with the new guest (`--vm-size` preset, then `--vm-memory`); none
/// is changed when a flag is wrong. A `size` the config carries is replaced by the guest.
pub fn vm_plan(
    machines: &[&Machine],
    flags: &GuestFlags,
) -> Result<Vec<(Machine, MachineConfig)>, InputError> {
    if flags.is_empty() {
        return Err(InputError("give a VM size or --vm-memory".into()));
    }
    machines
        .iter()
        .map(|m| {
            let mut config = m.config.clone().unwrap_or_default();
            let base = config.guest.take().or_else(|| {
                config
                    .size
                    .as_deref()
                    .and_then(hangar_manifest::guest::preset)
            });
            config.size = None;
            config.guest = Some(guest(base, flags)?);
            Ok(((*m).clone(), config))
        })
        .collect()
}

/// What [`roll_vm`] is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    /// Updating machine `id`, the `n`th of `of`.
    Updating {
        /// Machine id.
        id: String,
        /// 1-based position.
        n: usize,
        /// How many.
        of: usize,
    },
    /// Updated; `started` when it ran and was waited for until started again.
    Updated {
        /// Machine id.
        id: String,
        /// Started again (else left stopped as it was).
        started: bool,
    },
    /// Already of that guest.
    Unchanged {
        /// Machine id.
        id: String,
    },
}

/// Updates the machines of a plan one at a time (rolling, as the reference's `scale vm`):
/// each under its lease, a running one waited for until its new version is started before
/// the next, a stopped one left stopped. Stops at the first failure. Returns the machines
/// updated.
pub async fn roll_vm(
    client: &Client,
    app: &str,
    plan: Vec<(Machine, MachineConfig)>,
    wait_timeout: std::time::Duration,
    on: &mut (dyn FnMut(VmEvent) + Send),
) -> Result<Vec<String>, ClientError> {
    let of = plan.len();
    let mut done = Vec::new();
    for (i, (m, config)) in plan.into_iter().enumerate() {
        if m.config.as_ref() == Some(&config) {
            on(VmEvent::Unchanged { id: m.id.clone() });
            continue;
        }
        on(VmEvent::Updating {
            id: m.id.clone(),
            n: i + 1,
            of,
        });
        let started = crate::machine::is_running(&m);
        crate::machine::update_one(client, app, &m, config, None, Some(wait_timeout)).await?;
        on(VmEvent::Updated {
            id: m.id.clone(),
            started,
        });
        done.push(m.id);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, region: &str, state: MachineState, created: &str) -> Machine {
        let mut config = hangar_api_types::MachineConfig::default();
        config
            .metadata
            .insert("fly_process_group".into(), "web".into());
        Machine {
            id: id.into(),
            region: region.into(),
            state,
            created_at: created.into(),
            config: Some(config),
            ..Machine::default()
        }
    }

    #[test]
    fn targets_per_region_or_in_total() {
        let regions = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            targets(3, &regions, &[], "p", None),
            BTreeMap::from([("a".into(), 3), ("b".into(), 3)])
        );
        assert_eq!(
            targets(3, &[], &["x".into(), "y".into(), "x".into()], "p", None),
            BTreeMap::from([("x".into(), 2), ("y".into(), 1)])
        );
        assert_eq!(
            targets(2, &[], &[], "p", None),
            BTreeMap::from([("p".into(), 2)])
        );
        assert_eq!(
            targets(5, &regions, &[], "p", Some(2)),
            BTreeMap::from([("a".into(), 2), ("b".into(), 2)])
        );
        assert_eq!(
            targets(0, &[], &["x".into()], "p", None),
            BTreeMap::from([("x".into(), 0)])
        );
    }

    #[test]
    fn plans_create_and_destroy_stopped_first() {
        let ms = vec![
            m("s1", "a", MachineState::Started, "1"),
            m("s2", "a", MachineState::Started, "2"),
            m("st", "a", MachineState::Stopped, "0"),
        ];
        let p = plan(
            &ms,
            "web",
            &BTreeMap::from([("a".into(), 1), ("b".into(), 2)]),
        );
        assert_eq!(p.create, vec![("b".to_string(), 2)]);
        assert_eq!(p.destroy, vec!["st".to_string(), "s2".to_string()]);
        let p = plan(&ms, "web", &BTreeMap::from([("a".into(), 3)]));
        assert_eq!(p, Plan::default());
        let p = plan(&ms, "other", &BTreeMap::from([("a".into(), 1)]));
        assert_eq!(p.create, vec![("a".to_string(), 1)]);
    }

    #[test]
    fn vm_targets_need_a_group_when_there_are_several() {
        let mut ms = vec![
            m("w1", "a", MachineState::Started, "1"),
            m("w2", "a", MachineState::Stopped, "2"),
            m("gone", "a", MachineState::Destroyed, "3"),
        ];
        let (g, t) = vm_targets(&ms, None).expect("one group");
        assert_eq!(g.as_deref(), Some("web"));
        assert_eq!(t.len(), 2);
        let mut other = m("x", "a", MachineState::Started, "4");
        if let Some(c) = other.config.as_mut() {
            c.metadata
                .insert("fly_process_group".into(), "worker".into());
        }
        ms.push(other);
        let e = vm_targets(&ms, None).expect_err("two groups").0;
        assert!(e.contains("several process groups (web, worker)"), "{e}");
        let (_, t) = vm_targets(&ms, Some("worker")).expect("worker");
        assert_eq!(t.len(), 1);
        assert!(vm_targets(&ms, Some("nope")).is_err());
    }

    #[test]
    fn vm_plans_change_only_the_guest_and_refuse_unknown_sizes() {
        let ms = [m("w1", "a", MachineState::Started, "1")];
        let refs: Vec<&Machine> = ms.iter().collect();
        let p = vm_plan(
            &refs,
            &GuestFlags {
                size: Some("shared-cpu-2x".into()),
                memory: Some("1024".into()),
                ..GuestFlags::default()
            },
        )
        .expect("plan");
        let g = p[0].1.guest.clone().expect("guest");
        assert_eq!((g.cpus, g.memory_mb), (Some(2), Some(1024)));
        assert_eq!(
            p[0].1.metadata,
            ms[0].config.as_ref().expect("config").metadata
        );
        let e = vm_plan(
            &refs,
            &GuestFlags {
                size: Some("huge".into()),
                ..GuestFlags::default()
            },
        )
        .expect_err("unknown size")
        .0;
        assert!(e.contains("unknown VM size 'huge'"), "{e}");
        assert!(vm_plan(&refs, &GuestFlags::default()).is_err());
    }
}
