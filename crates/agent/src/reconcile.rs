//! The per-machine reconcile step: read the machine, do what its state and pending operation
//! ask, report each step through the state machine. Runs serially per machine.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use hangar_api_types::StopConfig;
use hangar_domain::{Action, ExitInfo, Level, RestartDecision, State};
use hangar_runtime::{ContainerId, ContainerState, Driver, ExitStatus, Signal};
use hangar_store::{EventRecord, MachineRecord, PendingOp, StoreError};
use serde_json::json;
use thiserror::Error;

use crate::platform_log::{exit_lines, started_in};
use crate::{Agent, lock};

/// Why an agent step failed.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The runtime failed.
    #[error("runtime: {0}")]
    Runtime(#[from] hangar_runtime::Error),
    /// The image could not be had.
    #[error("image: {0}")]
    Image(String),
    /// A host-level step (files, network) failed.
    #[error("host: {0}")]
    Host(String),
    /// The machine's config can not run.
    #[error("{0}")]
    Invalid(String),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn event_id() -> String {
    let t = now_ms().max(0) as u64;
    let mut r = [0u8; 16];
    if getrandom::fill(&mut r).is_err() {
        // Unique within the process even without the OS RNG.
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        r[..8].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    hangar_domain::InstanceId::new(t, u128::from_le_bytes(r)).to_string()
}

fn exit_json(
    e: &ExitStatus,
    requested: bool,
    restarting: bool,
    restart_count: i64,
) -> serde_json::Value {
    json!({
        "exit_event": {
            "exit_code": e.code,
            "guest_exit_code": e.code,
            "guest_signal": e.signal.unwrap_or(-1),
            "oom_killed": e.oom_killed,
            "requested_stop": requested,
            "restarting": restarting,
            "signal": e.signal.unwrap_or(-1),
            "exited_at": hangar_domain::time::rfc3339_ms(now_ms()),
        },
        "restart_count": restart_count,
    })
}

fn signal_of(stop: &StopConfig) -> (Signal, StdDuration) {
    let sig = stop
        .signal
        .as_deref()
        .and_then(Signal::parse)
        .unwrap_or(Signal::INT);
    let timeout = stop
        .timeout
        .and_then(|d| d.to_std())
        .unwrap_or(StdDuration::from_secs(5));
    (sig, timeout)
}

/// The proxy's shortcut for a request held on a suspended machine: the thaw comes right
/// after the start is recorded, not after the change log, this agent's loop and the
/// machine's worker have each woken (about half a millisecond). Done under the machine's
/// lock, taken without waiting: a worker that holds it does the thaw itself. The record
/// must still say `starting`, so a late call never thaws a machine suspended again since.
impl<D: Driver> hangar_domain::Resumer for Agent<D> {
    fn resume_now(&self, machine_id: &str) {
        let held = self.machine_lock(machine_id);
        if let Ok(guard) = held.try_lock() {
            if let Ok(Some(m)) = self.store.find_machine(machine_id)
                && m.state == State::Starting
                && let Ok(cid) = Self::cid(&m)
                && let Err(e) = self.driver.thaw_if_frozen(&cid)
            {
                // The worker tries again, and says so in the machine's events.
                eprintln!("hangar-agent: machine {machine_id}: resuming at once: {e}");
            }
            drop(guard);
        }
        self.release_machine_lock(machine_id, held);
    }
}

impl<D: Driver> Agent<D> {
    fn cid(m: &MachineRecord) -> Result<ContainerId, AgentError> {
        ContainerId::parse(&m.id).map_err(|e| AgentError::Invalid(e.to_string()))
    }

    fn event(
        &self,
        m: &MachineRecord,
        kind: &str,
        status: &str,
        request: Option<serde_json::Value>,
    ) {
        let _ = self.store.add_event(&EventRecord {
            id: event_id(),
            machine_id: m.id.clone(),
            kind: kind.into(),
            status: status.into(),
            source: "flyd".into(),
            timestamp: now_ms(),
            request,
        });
    }

    /// Applies `action`, sets `pending`, and writes; a concurrent API change wins (the caller
    /// re-reads and continues from the new state).
    fn report(
        &self,
        m: &MachineRecord,
        action: Action,
        pending: Option<PendingOp>,
    ) -> Result<Option<MachineRecord>, AgentError> {
        let Ok(next) = m.state.apply(action) else {
            return Ok(None);
        };
        let mut rec = m.clone();
        rec.state = next;
        rec.pending = pending;
        rec.updated_at = now_ms();
        match self.store.update_machine(&rec, m.revision) {
            Ok(stored) => Ok(Some(stored)),
            Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// One reconcile pass for machine `id` (kicked by a store change, an exit, or start-up).
    pub(crate) async fn reconcile(self: &Arc<Self>, id: &str) {
        let held = self.machine_lock(id);
        let guard = held.lock().await;
        // Bounded: each pass either makes progress (a state write) or stops.
        for _ in 0..16 {
            match self.step(id).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    self.fail(id, &e).await;
                    break;
                }
            }
        }
        drop(guard);
        self.release_machine_lock(id, held);
    }

    async fn fail(&self, id: &str, e: &AgentError) {
        eprintln!("hangar-agent: machine {id}: {e}");
        let Ok(Some(m)) = self.store.find_machine(id) else {
            return;
        };
        let action = match m.state {
            State::Creating => Action::CreateFailed,
            State::Starting | State::Restarting => Action::StartFailed,
            _ => return,
        };
        self.event(
            &m,
            "launch",
            "failed",
            Some(json!({"error": e.to_string()})),
        );
        self.runner_line(&m, Level::Error, format!("machine failed to start: {e}"));
        if let Ok(Some(m)) = self.report(&m, action, None)
            && m.state == State::LaunchFailed
        {
            // A machine that never came to be leaves nothing on the host.
            if let Err(e) = self.teardown(&m).await {
                eprintln!("hangar-agent: machine {id}: cleaning up a failed launch: {e}");
            }
            let _ = self.report(&m, Action::Removed, None);
        }
    }

    /// Does the next thing for a machine; `Ok(true)` when it changed something and another
    /// step may follow.
    async fn step(self: &Arc<Self>, id: &str) -> Result<bool, AgentError> {
        let Some(m) = self.store.find_machine(id)? else {
            // Gone from the store (its app deleted): what it left here goes now. The worker
            // holds the machine's lock, which garbage collection skips.
            self.collect_machine(id, None).await?;
            return Ok(false);
        };
        let exit = lock(&self.exits).remove(id);
        if let Some(exit) = exit {
            return self.on_exit(&m, exit).await;
        }
        let cid = Self::cid(&m)?;
        match (m.state, m.pending.clone()) {
            (State::Creating, pending) => {
                let image_ref = self.prepare(&m).await?;
                let mut rec = m.clone();
                rec.image_ref = Some(image_ref);
                let launch = pending == Some(PendingOp::Start);
                rec.state = m
                    .state
                    .apply(Action::Created {
                        skip_launch: !launch,
                    })
                    .map_err(|e| AgentError::Invalid(e.to_string()))?;
                rec.pending = launch.then_some(PendingOp::Start);
                rec.updated_at = now_ms();
                match self.store.update_machine(&rec, m.revision) {
                    Ok(_) => {}
                    Err(StoreError::Conflict { .. }) => return Ok(true),
                    Err(e) => return Err(e.into()),
                }
                self.event(&rec, "launch", "created", None);
                self.runner_line(&rec, Level::Info, "Machine created");
                Ok(true)
            }
            (State::Starting, _) => {
                // A resume is waited on by a request (autostart): a frozen container is
                // thawed first, before anything else is read or logged.
                let state = match self.driver.thaw_if_frozen(&cid) {
                    Ok(true) => Some(ContainerState::Running),
                    Ok(false) => self.driver.state(&cid).ok(),
                    Err(e) => match self.driver.state(&cid).ok() {
                        Some(ContainerState::Frozen) => return Err(e.into()),
                        other => other,
                    },
                };
                self.runner_line(&m, Level::Info, "Starting machine");
                match state {
                    Some(ContainerState::Running) => {}
                    // (A volume waiting to be grown offline needs a new container.)
                    Some(ContainerState::Created) if !self.volume_grow_pending(&m) => {
                        self.driver.start(&cid)?;
                    }
                    Some(ContainerState::Created | ContainerState::Stopped) | None => {
                        self.prepare(&m).await?;
                        self.driver.start(&cid)?;
                    }
                    Some(_) => {}
                }
                self.watch(&m);
                if self.report(&m, Action::Running, None)?.is_some() {
                    self.event(&m, "start", "started", None);
                    self.runner_line(&m, Level::Info, started_in(now_ms() - m.updated_at));
                }
                Ok(true)
            }
            (State::Restarting, pending) => {
                self.runner_line(&m, Level::Info, "Restarting machine");
                if let Some(PendingOp::Restart { stop }) = pending {
                    let (sig, timeout) = signal_of(&stop);
                    if let Ok(exit) = self.driver.stop(&cid, sig, timeout).await {
                        self.event(
                            &m,
                            "exit",
                            "stopped",
                            Some(exit_json(&exit, true, true, m.restart_count)),
                        );
                    }
                }
                self.unwatch(&m.id);
                self.fresh_container(&m).await?;
                self.driver.start(&cid)?;
                self.watch(&m);
                if self.report(&m, Action::Running, None)?.is_some() {
                    self.event(&m, "restart", "started", None);
                    self.runner_line(&m, Level::Info, started_in(now_ms() - m.updated_at));
                }
                Ok(true)
            }
            (State::Stopping, pending) => {
                let stop = match pending {
                    Some(PendingOp::Stop { stop }) => stop,
                    _ => m.config.stop_config.clone().unwrap_or_default(),
                };
                let (sig, timeout) = signal_of(&stop);
                self.runner_line(&m, Level::Info, "Stopping machine");
                self.unwatch(&m.id);
                let exit = match self.driver.state(&cid) {
                    Ok(_) => Some(self.driver.stop(&cid, sig, timeout).await?),
                    Err(_) => None,
                };
                if let Some(exit) = &exit {
                    self.event(
                        &m,
                        "exit",
                        "stopped",
                        Some(exit_json(exit, true, false, m.restart_count)),
                    );
                }
                if self.report(&m, Action::Halted, None)?.is_some() {
                    self.event(&m, "stop", "stopped", None);
                    self.runner_line(&m, Level::Info, "Machine stopped");
                    // A stopped machine is made ready again now, so its next start is only an exec.
                    self.fresh_container_quiet(&m).await;
                }
                Ok(true)
            }
            (State::Suspending, _) => {
                self.runner_line(&m, Level::Info, "Suspending machine");
                self.driver.freeze(&cid)?;
                if self.report(&m, Action::Frozen, None)?.is_some() {
                    self.event(&m, "suspend", "suspended", None);
                    self.runner_line(&m, Level::Info, "Machine suspended");
                }
                Ok(true)
            }
            (State::Updating, pending) => {
                let launch = matches!(pending, Some(PendingOp::Update { launch: true }));
                self.unwatch(&m.id);
                if self.driver.state(&cid).is_ok() {
                    let (sig, timeout) =
                        signal_of(&m.config.stop_config.clone().unwrap_or_default());
                    let _ = self.driver.stop(&cid, sig, timeout).await;
                    self.delete_container(&cid).await?;
                }
                hangar_image::remove_rootfs(&self.machine_dir(&m.id))
                    .map_err(|e| AgentError::Host(e.to_string()))?;
                let image_ref = self.prepare(&m).await?;
                let mut rec = m.clone();
                rec.image_ref = Some(image_ref);
                rec.state = m
                    .state
                    .apply(Action::Updated { launch })
                    .map_err(|e| AgentError::Invalid(e.to_string()))?;
                rec.pending = launch.then_some(PendingOp::Start);
                rec.updated_at = now_ms();
                match self.store.update_machine(&rec, m.revision) {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                self.event(&rec, "update", rec.state.as_str(), None);
                self.runner_line(&rec, Level::Info, "Machine updated");
                Ok(true)
            }
            (State::Destroying, _) => {
                self.unwatch(&m.id);
                self.teardown(&m).await?;
                if self.report(&m, Action::Removed, None)?.is_some() {
                    self.event(&m, "destroy", "destroyed", None);
                    self.runner_line(&m, Level::Info, "Machine destroyed");
                }
                self.forget(&m.id);
                Ok(false)
            }
            (State::Started, Some(PendingOp::Signal { signal })) => {
                if let Some(sig) = Signal::parse(&signal) {
                    self.driver.signal(&cid, sig)?;
                }
                let mut rec = m.clone();
                rec.pending = None;
                let _ = self.store.update_machine(&rec, m.revision);
                Ok(false)
            }
            (State::Started, _) => {
                // Adoption: make sure what the store says runs does run.
                match self.driver.state(&cid) {
                    Ok(ContainerState::Running) => self.watch(&m),
                    Ok(ContainerState::Frozen) => {
                        self.driver.thaw(&cid)?;
                        self.watch(&m);
                    }
                    Ok(ContainerState::Created) => {
                        self.driver.start(&cid)?;
                        self.watch(&m);
                    }
                    // It exited (maybe while no agent watched): the watcher reads its exit
                    // status (kept on disk) and hands it to the restart policy. One waiter
                    // per machine, never two.
                    _ => self.watch(&m),
                }
                Ok(false)
            }
            (State::Suspended, _) => {
                if matches!(self.driver.state(&cid), Ok(ContainerState::Running)) {
                    self.driver.freeze(&cid)?;
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// A machine's app exited on its own: the restart policy decides.
    async fn on_exit(
        self: &Arc<Self>,
        m: &MachineRecord,
        exit: ExitStatus,
    ) -> Result<bool, AgentError> {
        if !matches!(
            m.state,
            State::Started | State::Starting | State::Restarting
        ) {
            return Ok(true);
        }
        let restart = m.config.restart.clone().unwrap_or_default();
        let auto_destroy = m.config.auto_destroy.unwrap_or(false);
        let info = ExitInfo {
            code: Some(exit.code),
            signal: exit.signal,
            oom_killed: exit.oom_killed,
            requested_stop: false,
        };
        let decision = lock(&self.restarts)
            .entry(m.id.clone())
            .or_default()
            .decide(
                restart.policy.as_ref(),
                restart.max_retries,
                auto_destroy,
                info,
                now_ms().max(0) as u64,
            );
        let restarting = decision == RestartDecision::Restart;
        let count = m.restart_count + i64::from(restarting);
        for line in exit_lines(&exit, &restart, decision, count, info.is_success()) {
            self.runner_line(m, Level::Info, line);
        }
        self.event(
            m,
            "exit",
            if restarting { "restarting" } else { "stopped" },
            Some(exit_json(&exit, false, restarting, count)),
        );
        let Some(mut next) = self.report(
            m,
            Action::Exited {
                restart: restarting,
            },
            None,
        )?
        else {
            return Ok(true);
        };
        if restarting {
            next.restart_count = count;
            let _ = self.store.update_machine(&next, next.revision);
            return Ok(true);
        }
        if decision == RestartDecision::Destroy {
            self.report(
                &next,
                Action::Destroy { force: true },
                Some(PendingOp::Destroy { force: true }),
            )?;
        } else {
            self.fresh_container_quiet(&next).await;
            let policy = restart
                .policy
                .map_or("on-failure".to_string(), |p| p.to_string());
            self.event(&next, "exit", "stopped", Some(json!({"message": format!("machine restart policy set to '{policy}', not restarting")})));
        }
        Ok(true)
    }

    /// Watches a running machine for its exit (once per machine at a time).
    fn watch(self: &Arc<Self>, m: &MachineRecord) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let mut w = lock(&self.watching);
        if w.contains_key(&m.id) {
            return;
        }
        let token = NEXT.fetch_add(1, Ordering::Relaxed);
        let agent = Arc::clone(self);
        let id = m.id.clone();
        let task = tokio::spawn(async move {
            let Ok(cid) = ContainerId::parse(&id) else {
                return;
            };
            let exit = agent.driver.wait_exit(&cid).await;
            {
                let mut w = lock(&agent.watching);
                if w.get(&id).map(|(t, _)| *t) != Some(token) {
                    return;
                }
                w.remove(&id);
            }
            if let Ok(exit) = exit {
                lock(&agent.exits).insert(id.clone(), exit);
                agent.kick(&id);
            }
        });
        w.insert(m.id.clone(), (token, task.abort_handle()));
        drop(w);
        self.track(task.abort_handle());
    }

    /// Stops treating the next exit as unexpected (an operation is about to cause it): the
    /// watcher is cancelled so only the operation waits for the exit.
    fn unwatch(&self, id: &str) {
        if let Some((_, h)) = lock(&self.watching).remove(id) {
            h.abort();
        }
        lock(&self.exits).remove(id);
    }

    async fn delete_container(&self, cid: &ContainerId) -> Result<(), AgentError> {
        let driver = self.driver.clone();
        let cid = cid.clone();
        tokio::task::spawn_blocking(move || driver.delete(&cid))
            .await
            .map_err(|e| AgentError::Host(e.to_string()))??;
        Ok(())
    }

    /// Replaces the machine's container with a freshly created one (rootfs reset unless the
    /// machine persists it).
    async fn fresh_container(&self, m: &MachineRecord) -> Result<(), AgentError> {
        let cid = Self::cid(m)?;
        self.delete_container(&cid).await?;
        let persist = m
            .config
            .guest
            .as_ref()
            .and_then(|g| g.persist_rootfs.as_deref())
            == Some("always")
            || m.config.rootfs.as_ref().and_then(|r| r.persist.as_deref()) == Some("always");
        if !persist {
            hangar_image::remove_rootfs(&self.machine_dir(&m.id))
                .map_err(|e| AgentError::Host(e.to_string()))?;
        }
        self.prepare(m).await?;
        Ok(())
    }

    async fn fresh_container_quiet(&self, m: &MachineRecord) {
        if let Err(e) = self.fresh_container(m).await {
            eprintln!(
                "hangar-agent: machine {}: preparing the next start: {e}",
                m.id
            );
        }
    }

    /// Removes everything of a machine from the host. Idempotent.
    pub(crate) async fn teardown(&self, m: &MachineRecord) -> Result<(), AgentError> {
        let cid = Self::cid(m)?;
        self.delete_container(&cid).await?;
        let dir = self.machine_dir(&m.id);
        hangar_image::remove_rootfs(&dir).map_err(|e| AgentError::Host(e.to_string()))?;
        if let Ok((network, mnet)) = self.network_of(m) {
            if let Some(iso) = &self.config.isolation {
                iso.remove_machine(&mnet)
                    .map_err(|e| AgentError::Host(format!("network isolation rules: {e}")))?;
            }
            mnet.remove().map_err(|e| AgentError::Host(e.to_string()))?;
            if let Some(v4) = mnet.ipv4 {
                self.release_ipv4(v4);
            }
            self.release_network(&network, &m.id).await;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AgentError::Host(format!("removing {}: {e}", dir.display()))),
        }
    }

    /// Removes containers, namespaces and machine dirs that belong to no live machine, and
    /// the mounts, loop devices and disks of volumes the store no longer has.
    /// Only what this agent made is considered: its driver's containers and the machine dirs
    /// under its data dir (teardown removes the dir last, so a half-torn-down machine is
    /// still found); namespaces of another agent on the same machine are never touched.
    pub(crate) async fn collect_garbage(&self) -> Result<(), AgentError> {
        let live: std::collections::HashSet<String> = self
            .store
            .all_live_machines()?
            .into_iter()
            .map(|m| m.id)
            .collect();
        let driver = self.driver.clone();
        let containers = tokio::task::spawn_blocking(move || driver.list())
            .await
            .map_err(|e| AgentError::Host(e.to_string()))??;
        let mut gone: std::collections::BTreeSet<String> = containers
            .iter()
            .map(|c| c.id.as_str().to_string())
            .filter(|id| !live.contains(id))
            .collect();
        if let Ok(dir) = std::fs::read_dir(&self.config.machines_dir) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !live.contains(&name) && hangar_domain::MachineId::parse(&name).is_ok() {
                    gone.insert(name);
                }
            }
        }
        let namespaces: std::collections::HashSet<String> =
            hangar_net::list_machine_namespaces().into_iter().collect();
        // One failure does not stop the rest; the first is returned (collection runs again
        // on the next deleted app and on the volume beat).
        let mut failed = None;
        for id in gone {
            let held = self.machine_lock(&id);
            // A machine whose worker is busy is collected by that worker, when it finds the
            // machine gone from the store.
            let Ok(guard) = held.try_lock() else {
                continue;
            };
            if let Err(e) = self.collect_machine(&id, Some(&namespaces)).await {
                eprintln!("hangar-agent: collecting machine {id}: {e}");
                failed.get_or_insert(e);
            }
            drop(guard);
            self.release_machine_lock(&id, held);
        }
        // Bridges of networks with nothing here any more (an app deleted with its machines).
        let mut networks: std::collections::BTreeSet<u32> = self
            .store
            .list_networks()?
            .into_iter()
            .map(|n| n.id)
            .collect();
        networks.extend(
            self.store
                .list_orgs()?
                .into_iter()
                .filter_map(|o| u32::try_from(o.numeric_id).ok()),
        );
        for id in networks {
            let network = hangar_net::Network::new(id, self.config.host_id);
            if network.exists() {
                self.release_network(&network, "").await;
            }
        }
        // Volumes last: the containers that mounted them are gone by now.
        self.collect_volume_garbage().await?;
        failed.map_or(Ok(()), Err)
    }

    /// Removes what a machine that is no longer in the store left on this host: its container,
    /// root filesystem, network namespace, IPv4 address and directory. The caller holds the
    /// machine's lock. `namespaces`: the machine namespaces that exist, when already listed.
    pub(crate) async fn collect_machine(
        &self,
        id: &str,
        namespaces: Option<&std::collections::HashSet<String>>,
    ) -> Result<(), AgentError> {
        let mut failed = None;
        if let Ok(cid) = ContainerId::parse(id)
            && self.driver.state(&cid).is_ok()
            && let Err(e) = self.delete_container(&cid).await
        {
            failed = Some(e);
        }
        let dir = self.config.machines_dir.join(id);
        let _ = hangar_image::remove_rootfs(&dir);
        let v4 = self.machine_ipv4(id);
        let net = hangar_net::MachineNet::new(id, std::net::Ipv6Addr::UNSPECIFIED).with_ipv4(v4);
        let has_ns = namespaces.map_or_else(|| net.netns_path().exists(), |n| n.contains(id));
        if has_ns || v4.is_some() {
            let _ = net.remove();
        }
        if let Some(v4) = v4 {
            self.release_ipv4(v4);
        }
        self.forget(id);
        let _ = std::fs::remove_dir_all(&dir);
        failed.map_or(Ok(()), Err)
    }
}
