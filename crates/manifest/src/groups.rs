//! Process-group targeting (PLATFORM.md §1.7): which sections apply to which group.

use crate::model::{Compute, Config};

/// Does a section with this `processes` list apply to `group`? A list applies to the groups
/// it names; no list applies only to the default group.
pub fn group_matches(c: &Config, processes: &[String], group: &str) -> bool {
    if processes.is_empty() {
        group == c.default_group()
    } else {
        processes.iter().any(|p| p == group)
    }
}

/// The `[[vm]]` for `group`: the last naming it, else the last with no list (which applies
/// to every group lacking a specific one). Later entries win, as in the reference.
pub fn vm_for_group<'a>(c: &'a Config, group: &str) -> Option<&'a Compute> {
    c.vm.iter()
        .rev()
        .find(|v| v.processes.iter().any(|p| p == group))
        .or_else(|| c.vm.iter().rev().find(|v| v.processes.is_empty()))
}
