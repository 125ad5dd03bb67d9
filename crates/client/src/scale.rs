//! `scale count`: machines of a process group created (cloned from the group's newest
//! config) or destroyed (stopped ones first) until each region has its count.
//!
//! With regions given, `count` is per region (the reference's `fly scale count 3 --region
//! a,b` makes three in each); without, `count` is the group's total, spread over the regions
//! it runs in (or the primary region), round robin. `max_per_region` caps every region.

use std::collections::BTreeMap;

use hangar_api_types::{CreateMachineRequest, Machine, MachineState};

use crate::api::{Client, ClientError};

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

/// Carries out a plan; the new machines get the group's newest config.
pub async fn apply(
    client: &Client,
    app: &str,
    group: &str,
    machines: &[Machine],
    p: &Plan,
) -> Result<(Vec<String>, Vec<String>), ClientError> {
    let template = machines
        .iter()
        .filter(|m| group_of(m).as_deref() == Some(group))
        .max_by_key(|m| m.updated_at.clone())
        .and_then(|m| m.config.clone())
        .ok_or_else(|| ClientError::Api {
            status: 404,
            message: format!("no machine of group '{group}' to copy: deploy first"),
            code: None,
        })?;
    let mut created = Vec::new();
    for (region, n) in &p.create {
        for _ in 0..*n {
            let m = client
                .create_machine(
                    app,
                    &CreateMachineRequest {
                        config: template.clone(),
                        region: Some(region.clone()),
                        ..CreateMachineRequest::default()
                    },
                )
                .await?;
            created.push(m.id);
        }
    }
    // Up before anything goes (a machine still being made can not be destroyed either).
    for id in &created {
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
    let mut destroyed = Vec::new();
    for id in &p.destroy {
        client.destroy(app, id, true).await?;
        destroyed.push(id.clone());
    }
    Ok((created, destroyed))
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
