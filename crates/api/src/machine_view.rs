//! Store records → Machines API JSON.

use hangar_api_types::{
    CheckStatus, CheckStatusEntry, HostStatus, Machine, MachineEvent, MachineEventRequest,
};
use hangar_domain::time::rfc3339;
use hangar_store::{CheckRecord, EventRecord, MachineRecord};

/// Events shown inline in a machine object.
pub(crate) const INLINE_EVENTS: usize = 5;

pub(crate) fn event(e: &EventRecord) -> MachineEvent {
    MachineEvent {
        id: Some(e.id.clone()),
        r#type: e.kind.clone(),
        status: e.status.clone(),
        source: e.source.clone(),
        timestamp: e.timestamp,
        request: e
            .request
            .as_ref()
            .and_then(|r| serde_json::from_value::<MachineEventRequest>(r.clone()).ok()),
    }
}

pub(crate) fn check(c: &CheckRecord) -> CheckStatusEntry {
    CheckStatusEntry {
        name: c.name.clone(),
        status: serde_json::from_value(serde_json::Value::String(c.status.clone()))
            .unwrap_or(CheckStatus::Critical),
        output: c.output.clone(),
        updated_at: Some(rfc3339(c.updated_at)),
    }
}

pub(crate) fn machine(
    m: &MachineRecord,
    events: &[EventRecord],
    checks: &[CheckRecord],
    nonce: Option<String>,
) -> Machine {
    Machine {
        id: m.id.clone(),
        name: m.name.clone(),
        state: m.state.to_api(),
        region: m.region.clone(),
        image_ref: m.image_ref.clone(),
        instance_id: m.instance_id.clone(),
        version: Some(m.instance_id.clone()),
        private_ip: m.private_ip.clone(),
        created_at: rfc3339(m.created_at),
        updated_at: rfc3339(m.updated_at),
        config: Some(m.config.clone()),
        events: events.iter().map(event).collect(),
        nonce,
        host_status: Some(HostStatus::Ok),
        cordoned: Some(m.cordoned),
        checks: checks.iter().map(check).collect(),
        ..Machine::default()
    }
}
