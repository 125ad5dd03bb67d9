//! Outbound IPv4 addresses of machines (see `hangar_net::egress`): one per machine from the
//! host's pool, kept in the machine's directory (`ipv4`) so that it survives daemon restarts
//! and is freed with the directory.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;

use hangar_runtime::Driver;

use crate::reconcile::AgentError;
use crate::{Agent, lock};

const FILE: &str = "ipv4";

fn read(dir: &Path) -> Option<Ipv4Addr> {
    std::fs::read_to_string(dir.join(FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

impl<D: Driver> Agent<D> {
    /// The machine's outbound IPv4 address if it has one (never assigns).
    pub(crate) fn machine_ipv4(&self, id: &str) -> Option<Ipv4Addr> {
        self.config.egress.as_ref()?;
        read(&self.machine_dir(id))
    }

    /// The machine's outbound IPv4 address, assigned now if it has none. `None` when the host
    /// gives machines no IPv4.
    pub(crate) fn assign_ipv4(&self, id: &str) -> Result<Option<Ipv4Addr>, AgentError> {
        let Some(egress) = &self.config.egress else {
            return Ok(None);
        };
        let dir = self.machine_dir(id);
        let mut used = lock(&self.ipv4_used);
        let used = used.get_or_insert_with(|| self.scan_ipv4());
        if let Some(a) = read(&dir).filter(|a| egress.contains(*a)) {
            used.insert(a);
            return Ok(Some(a));
        }
        let addr = egress
            .addresses()
            .find(|a| !used.contains(a))
            .ok_or_else(|| {
                AgentError::Host(format!("the IPv4 pool {} is exhausted", egress.pool()))
            })?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::Host(format!("creating {}: {e}", dir.display())))?;
        let tmp = dir.join("ipv4.tmp");
        std::fs::write(&tmp, format!("{addr}\n"))
            .and_then(|()| std::fs::rename(&tmp, dir.join(FILE)))
            .map_err(|e| AgentError::Host(format!("recording the IPv4 address: {e}")))?;
        used.insert(addr);
        Ok(Some(addr))
    }

    /// Gives a machine's address back to the pool (its directory is going away).
    pub(crate) fn release_ipv4(&self, addr: Ipv4Addr) {
        if let Some(used) = lock(&self.ipv4_used).as_mut() {
            used.remove(&addr);
        }
    }

    fn scan_ipv4(&self) -> HashSet<Ipv4Addr> {
        std::fs::read_dir(&self.config.machines_dir)
            .map(|d| d.flatten().filter_map(|e| read(&e.path())).collect())
            .unwrap_or_default()
    }
}
