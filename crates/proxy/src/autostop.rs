//! Autostop (PLATFORM.md §3.7): idle machines of services with `autostop` are stopped or
//! suspended, keeping `min_machines_running` in the primary region and, where more than one
//! runs, only what the excess-capacity rule allows. A machine is idle when nothing is in
//! flight on it (open websockets and TCP connections count) and nothing was for the whole
//! interval; the check runs every second, so an idle machine stops within interval ± 1 s.
//! Stopping is graceful: the machine is drained (no new traffic), in-flight work finishes
//! (bounded), then the stop is recorded with its own signal and timeout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hangar_api_types::Autostop;
use hangar_domain::State;

use crate::Proxy;
use crate::balance::service_limits;
use crate::catalog::{MachineEntry, autostop};
use crate::http::{idle, set_draining};

/// How long a drained machine's in-flight work may take before it is stopped anyway.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// One pass over every app; returns the machines it decided to stop.
pub fn pass(proxy: &Arc<Proxy>) -> Vec<(Arc<MachineEntry>, bool)> {
    let interval = proxy.config.autostop_interval;
    let snap = proxy.catalog.snapshot();
    let mut out = Vec::new();
    for app in snap.apps.values() {
        // Group by (region, the autostop service's internal port): one decision per group.
        let mut groups: BTreeMap<(String, i64), Vec<&Arc<MachineEntry>>> = BTreeMap::new();
        for m in &app.machines {
            if let Some(s) = m.all_services().find(|s| autostop(s).is_enabled()) {
                groups
                    .entry((m.region.clone(), s.internal_port))
                    .or_default()
                    .push(m);
            }
        }
        for ((region, internal), ms) in groups {
            let running: Vec<&&Arc<MachineEntry>> = ms
                .iter()
                .filter(|m| m.state == State::Started && !m.cordoned)
                .filter(|m| {
                    !proxy
                        .loads
                        .get(&m.id)
                        .draining
                        .load(std::sync::atomic::Ordering::Acquire)
                })
                .collect();
            if running.is_empty() {
                continue;
            }
            let svc = |m: &MachineEntry| {
                m.all_services()
                    .find(|s| s.internal_port == internal)
                    .cloned()
                    .unwrap_or_default()
            };
            let first = svc(running[0]);
            let min = first
                .min_machines_running
                .and_then(|v| usize::try_from(v).ok())
                .unwrap_or(0);
            let primary = running[0]
                .primary_region
                .clone()
                .unwrap_or_else(|| proxy.config.region.clone());
            if region == primary && running.len() <= min {
                continue;
            }
            let over_soft = running
                .iter()
                .filter(|m| {
                    // The limits of the service that makes the group (TCP or UDP).
                    let (soft, _) = service_limits(Some(&svc(m)));
                    proxy.loads.get(&m.id).in_flight() >= soft
                })
                .count();
            if running.len() > 1 && running.len() < over_soft + 2 {
                // excess = running − (over_soft + 1) < 1: all capacity is in use.
                continue;
            }
            let mut idle_ones: Vec<(u64, &&Arc<MachineEntry>)> = running
                .iter()
                .filter(|m| idle(&proxy.loads.get(&m.id), interval))
                .map(|m| (proxy.loads.get(&m.id).last_active_ms(), *m))
                .collect();
            idle_ones.sort_by_key(|(t, m)| (*t, m.id.clone()));
            if let Some((_, m)) = idle_ones.first() {
                // `suspend` suspends only a machine the reference would (§3.7); others stop.
                let suspend = autostop(&svc(m)) == Autostop::Suspend && m.suspendable;
                out.push((Arc::clone(m), suspend));
            }
        }
    }
    out
}

/// Drains and stops one machine (runs as its own task).
pub async fn stop_one(proxy: Arc<Proxy>, m: Arc<MachineEntry>, suspend: bool) {
    let load = proxy.loads.get(&m.id);
    set_draining(&load, true);
    // A request routed to it between the pass and the drain (one that picked it just before
    // the flag was visible takes its slot within microseconds): the machine is busy again,
    // so it is not stopped; a later pass looks again.
    tokio::time::sleep(Duration::from_millis(5)).await;
    if !idle(&load, proxy.config.autostop_interval) {
        set_draining(&load, false);
        return;
    }
    let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
    while load.in_flight() > 0 && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(50), proxy.loads.any_freed()).await;
    }
    let action = if suspend { "suspend" } else { "stop" };
    match crate::control::stop(proxy.store.as_ref(), &m.id, suspend, m.stop_config.clone()) {
        Ok(crate::control::Outcome::Done) => proxy.metrics.autostop(&m.app, action),
        // Already on its way down (the API), or in a state that can not stop: not ours.
        Ok(_) => {}
        Err(e) => eprintln!("hangar-proxy: autostop of {} failed: {e}", m.id),
    }
    // Routing stops seeing it as started once the catalog has the change; until then it
    // stays drained. Bounded.
    let mut rx = proxy.catalog.subscribe();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let state = proxy
                .catalog
                .snapshot()
                .machines
                .get(&m.id)
                .map(|e| e.state);
            if state != Some(State::Started) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    set_draining(&load, false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProxyConfig;

    /// A proxy over `store` for which any machine without load is idle.
    fn eager(store: &Arc<dyn hangar_store::Store>) -> Arc<Proxy> {
        Proxy::new(
            Arc::clone(store),
            ProxyConfig {
                autostop_interval: Duration::ZERO,
                ..ProxyConfig::default()
            },
        )
    }

    #[tokio::test]
    async fn a_machine_busy_again_when_drained_is_not_stopped() {
        let id = "0123456789abd9";
        let store = crate::wake::tests::store_with_machine(id, State::Started);
        let proxy = eager(&store);
        proxy.catalog.load(store.as_ref()).expect("load");
        let m = proxy.catalog.snapshot().machines[id].clone();
        // The pass found it idle; then a request took it.
        let slot = proxy.loads.acquire(id);
        stop_one(Arc::clone(&proxy), Arc::clone(&m), false).await;
        let rec = store.find_machine(id).expect("read").expect("machine");
        assert_eq!(rec.state, State::Started, "stopped under a request");
        assert!(
            !proxy
                .loads
                .get(id)
                .draining
                .load(std::sync::atomic::Ordering::Acquire),
            "left drained"
        );
        assert!(
            !proxy
                .render_metrics()
                .contains("hangar_proxy_autostop_total{")
        );
        drop(slot);
    }

    #[tokio::test]
    async fn a_service_on_a_port_range_is_judged_by_its_own_limits() {
        // Two machines serving ports 9000-9009, soft limit 1; one has a request in flight.
        // Every capacity is in use by the excess rule (2 < 1 + 2): nothing stops.
        let store = crate::wake::tests::store_with_machine("0123456789abd6", State::Started);
        let mut second = store
            .find_machine("0123456789abd6")
            .expect("read")
            .expect("machine");
        second.id = "0123456789abd7".into();
        second.name = second.id.clone();
        second.revision = 0;
        store.insert_machine(&second).expect("insert");
        for id in ["0123456789abd6", "0123456789abd7"] {
            let mut rec = store.find_machine(id).expect("read").expect("machine");
            rec.config.services = vec![hangar_api_types::MachineService {
                internal_port: 8080,
                autostop: Some(Autostop::Stop),
                ports: vec![hangar_api_types::MachinePort {
                    start_port: Some(9000),
                    end_port: Some(9009),
                    handlers: vec!["http".into()],
                    ..Default::default()
                }],
                concurrency: Some(hangar_api_types::MachineServiceConcurrency {
                    r#type: None,
                    soft_limit: Some(1),
                    hard_limit: Some(5),
                }),
                ..Default::default()
            }];
            store.update_machine(&rec, rec.revision).expect("update");
        }
        let proxy = eager(&store);
        proxy.catalog.load(store.as_ref()).expect("load");
        let _busy = proxy.loads.acquire("0123456789abd6");
        assert!(pass(&proxy).is_empty());
    }

    #[tokio::test]
    async fn suspend_falls_back_to_stop_for_a_machine_the_reference_would_not_suspend() {
        let id = "0123456789abd8";
        let store = crate::wake::tests::store_with_machine(id, State::Started);
        let proxy = eager(&store);
        for (memory_mb, suspends) in [(1024, true), (2048, true), (4096, false)] {
            let mut rec = store.find_machine(id).expect("read").expect("machine");
            rec.config.services = vec![hangar_api_types::MachineService {
                internal_port: 8080,
                autostop: Some(Autostop::Suspend),
                ..Default::default()
            }];
            rec.config.guest = Some(hangar_api_types::MachineGuest {
                memory_mb: Some(memory_mb),
                ..Default::default()
            });
            store.update_machine(&rec, rec.revision).expect("update");
            proxy.catalog.load(store.as_ref()).expect("load");
            let decided: Vec<(String, bool)> = pass(&proxy)
                .into_iter()
                .map(|(m, suspend)| (m.id.clone(), suspend))
                .collect();
            assert_eq!(decided, [(id.to_string(), suspends)], "{memory_mb} MB");
        }
    }
}
