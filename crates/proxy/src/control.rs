//! The proxy's writes: starting a machine for a request (autostart) and stopping or
//! suspending an idle one (autostop). Like the API, it only records the transition (checked
//! by `hangar_domain::State::apply`) and a pending operation; the agent carries it out.

use hangar_api_types::StopConfig;
use hangar_domain::{Action, InstanceId, State};
use hangar_store::{EventRecord, MachineRecord, PendingOp, Store, StoreError};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn event_id() -> String {
    let mut r = [0u8; 16];
    let _ = getrandom::fill(&mut r);
    InstanceId::new(now_ms().max(0) as u64, u128::from_le_bytes(r)).to_string()
}

/// What a control write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The transition was recorded.
    Done,
    /// The machine was already where we wanted it (or on its way).
    Already,
    /// The machine's state does not allow it now.
    Refused(State),
}

fn transition(
    store: &dyn Store,
    id: &str,
    action: Action,
    pending: PendingOp,
    kind: &str,
    already: &[State],
) -> Result<Outcome, StoreError> {
    // A concurrent writer (the API, the agent) wins; re-read and decide again, boundedly.
    for _ in 0..5 {
        let Some(m) = store.find_machine(id)? else {
            return Err(StoreError::NotFound("machine"));
        };
        if already.contains(&m.state) {
            return Ok(Outcome::Already);
        }
        let Ok(next) = m.state.apply(action) else {
            return Ok(Outcome::Refused(m.state));
        };
        let mut rec: MachineRecord = m.clone();
        rec.state = next;
        rec.pending = Some(pending.clone());
        rec.updated_at = now_ms();
        let event = EventRecord {
            id: event_id(),
            machine_id: rec.id.clone(),
            kind: kind.into(),
            status: next.as_str().into(),
            source: "fly-proxy".into(),
            timestamp: now_ms(),
            request: None,
        };
        // One commit: the agent, woken by it, does not then wait for the event's.
        match store.update_machine_with_event(&rec, m.revision, &event) {
            Ok(_) => return Ok(Outcome::Done),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict {
        expected: 0,
        actual: 0,
    })
}

/// Starts a stopped or suspended machine.
pub fn start(store: &dyn Store, id: &str) -> Result<Outcome, StoreError> {
    transition(
        store,
        id,
        Action::Start,
        PendingOp::Start,
        "start",
        &[State::Starting, State::Started],
    )
}

/// Stops (or suspends) an idle machine with its own stop signal and timeout.
pub fn stop(
    store: &dyn Store,
    id: &str,
    suspend: bool,
    stop: Option<StopConfig>,
) -> Result<Outcome, StoreError> {
    if suspend {
        transition(
            store,
            id,
            Action::Suspend,
            PendingOp::Suspend,
            "suspend",
            &[State::Suspending, State::Suspended],
        )
    } else {
        transition(
            store,
            id,
            Action::Stop,
            PendingOp::Stop {
                stop: stop.unwrap_or_default(),
            },
            "stop",
            &[State::Stopping, State::Stopped],
        )
    }
}
