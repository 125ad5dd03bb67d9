//! Flycast on this host (PLATFORM.md §4.3): each Flycast address allocated for a network that
//! has machines here sits on that network's bridge (`hangar_net::Network::sync_flycast`), and
//! the isolation rules let that network's machines, and no one else, reach it on the app's
//! Flycast ports (`hangar_domain::flycast::ports`), where the proxy listens.
//!
//! The wanted state is computed from the store at start (after the isolation tables are
//! rebuilt, which empties their Flycast set) and whenever IP assignments or machines change
//! (services, networks coming to this host), and applied only when it differs from what was
//! applied last. A failure is logged and tried again on the next change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;

use hangar_domain::sixpn;
use hangar_net::Network;
use hangar_net::flycast::FlycastRule;
use hangar_runtime::Driver;

use crate::reconcile::AgentError;
use crate::{Agent, lock};

/// What is on the host: the Flycast addresses of each network with machines here (possibly
/// none), and the rules opening them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Applied {
    addrs: BTreeMap<u32, Vec<Ipv6Addr>>,
    rules: Vec<FlycastRule>,
}

impl<D: Driver> Agent<D> {
    /// The wanted state; without any Flycast address, the networks are only looked at when
    /// `full` (the first look since start, to clear what was released meanwhile).
    fn flycast_wanted(&self, full: bool) -> Result<Applied, AgentError> {
        let assignments: Vec<_> = self
            .store
            .list_ip_assignments(None)?
            .into_iter()
            .filter(|a| a.is_flycast())
            .collect();
        let mut want = Applied::default();
        if assignments.is_empty() && !full {
            return Ok(want);
        }
        let host = self.config.host_id;
        let mut services: BTreeMap<String, Vec<hangar_api_types::MachineService>> = BTreeMap::new();
        for m in self.store.all_live_machines()? {
            if let Some((net, h)) = m.private_ip.parse().ok().and_then(sixpn::parse)
                && h == host
            {
                want.addrs.entry(net).or_default();
            }
            services
                .entry(m.app.clone())
                .or_default()
                .extend(m.config.services);
        }
        for a in assignments {
            let (Ok(addr), Some(net)) = (a.ip.parse::<Ipv6Addr>(), a.network_id) else {
                continue;
            };
            if sixpn::flycast_network(addr) != Some(net) {
                continue;
            }
            let Some(addrs) = want.addrs.get_mut(&net) else {
                continue;
            };
            addrs.push(addr);
            let bridge = Network::new(net, host).bridge;
            let ports = hangar_domain::flycast::ports(services.get(&a.app).into_iter().flatten());
            for port in ports.into_keys() {
                want.rules.push(FlycastRule {
                    bridge: bridge.clone(),
                    addr,
                    port,
                });
            }
        }
        // Networks without addresses matter only to clear what was there.
        want.addrs.retain(|_, v| {
            v.sort();
            full || !v.is_empty()
        });
        want.rules.sort();
        Ok(want)
    }

    /// Makes this host's Flycast addresses and rules what the store says (see the module).
    pub(crate) fn sync_flycast(&self) -> Result<(), AgentError> {
        let mut last = lock(&self.flycast);
        let want = self.flycast_wanted(last.is_none())?;
        if last.as_ref() == Some(&want) {
            return Ok(());
        }
        let none = Vec::new();
        let prev = last.take();
        let mut networks: BTreeSet<u32> = want.addrs.keys().copied().collect();
        if let Some(p) = &prev {
            networks.extend(p.addrs.keys());
        }
        let host = self.config.host_id;
        for n in networks {
            let addrs = want.addrs.get(&n).unwrap_or(&none);
            if prev
                .as_ref()
                .is_some_and(|p| p.addrs.get(&n).unwrap_or(&none) == addrs)
            {
                continue;
            }
            Network::new(n, host)
                .sync_flycast(addrs)
                .map_err(|e| AgentError::Host(format!("Flycast addresses: {e}")))?;
        }
        if let Some(iso) = &self.config.isolation
            && prev.as_ref().is_none_or(|p| p.rules != want.rules)
        {
            iso.set_flycast(&want.rules)
                .map_err(|e| AgentError::Host(format!("Flycast rules: {e}")))?;
        }
        // Addresses of networks with none are kept only by the first look.
        let mut applied = want;
        applied.addrs.retain(|_, v| !v.is_empty());
        *last = Some(applied);
        Ok(())
    }

    /// [`Agent::sync_flycast`], failures logged (the next change tries again).
    pub(crate) fn sync_flycast_logged(&self) {
        if let Err(e) = self.sync_flycast() {
            eprintln!("hangar-agent: {e} (tried again on the next change)");
        }
    }

    /// Forgets what was applied (the isolation tables were just rebuilt without it).
    pub(crate) fn reset_flycast(&self) {
        *lock(&self.flycast) = None;
    }
}
