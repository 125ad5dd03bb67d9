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

use std::collections::BTreeMap;

use hangar_api_types::{CreateMachineRequest, CreateVolumeRequest, Machine, MachineState, Volume};

use crate::api::{Client, ClientError};
use crate::deploy::free_volume;

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
}
