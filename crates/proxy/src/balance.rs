//! Load per machine and the choice of a machine for a request (PLATFORM.md §3.2).
//!
//! Load is the number of requests (http) or connections (raw TCP) the proxy has in flight to
//! a machine. A machine under its soft limit is preferred; between soft and hard it is used
//! only when every other machine of the region is over soft too; at hard it gets nothing new.
//! Regions are tried nearest first, and a farther region only when every candidate of the
//! nearer ones is unhealthy or at its hard limit. Ties go round-robin.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hangar_domain::State;
use tokio::sync::Notify;

use crate::catalog::{AppEntry, MachineEntry};

/// Default limits when a service has no `concurrency` (the reference's defaults).
pub const DEFAULT_SOFT_LIMIT: usize = 20;
/// See [`DEFAULT_SOFT_LIMIT`].
pub const DEFAULT_HARD_LIMIT: usize = 25;

/// What the proxy knows about one machine's traffic.
#[derive(Debug, Default)]
pub struct Load {
    in_flight: AtomicUsize,
    /// Requests waiting for it to wake: activity too, though not yet in flight.
    waking: AtomicUsize,
    last_active_ms: AtomicU64,
    /// Set while autostop stops it: no new traffic.
    pub draining: AtomicBool,
    freed: Arc<Freed>,
    /// Bumped when the machine goes away (leaves `started`, or the proxy stops): its
    /// websockets get a close frame ([`crate::ws`]).
    away: tokio::sync::watch::Sender<u64>,
    going_away: AtomicBool,
}

impl Load {
    /// Requests or connections in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests waiting for the machine to wake.
    pub fn waking(&self) -> usize {
        self.waking.load(Ordering::Acquire)
    }

    /// Counts a request as waiting for the machine to wake until the guard drops (then
    /// marks activity). Autostop leaves a machine with waiters alone: a wake that outlasts
    /// the autostop interval must not be answered by stopping the machine it just started.
    pub fn wait_for_wake(self: &Arc<Self>) -> WakeWait {
        self.touch();
        self.waking.fetch_add(1, Ordering::AcqRel);
        WakeWait(Arc::clone(self))
    }

    /// When traffic last started or ended (ms since the Unix epoch).
    pub fn last_active_ms(&self) -> u64 {
        self.last_active_ms.load(Ordering::Acquire)
    }

    /// Marks activity now (e.g. bytes moving on a long-lived connection).
    pub fn touch(&self) {
        // Written only when the millisecond changed: many requests share one, and a write
        // takes the line from the other workers.
        let now = now_ms();
        if self.last_active_ms.load(Ordering::Relaxed) != now {
            self.last_active_ms.store(now, Ordering::Release);
        }
    }

    /// The machine is going away: long-lived connections on it should end gracefully.
    pub fn go_away(&self) {
        self.going_away.store(true, Ordering::Release);
        self.away.send_modify(|n| *n += 1);
    }

    /// The machine serves again (started once more).
    pub fn came_back(&self) {
        self.going_away.store(false, Ordering::Release);
    }

    /// Whether the machine is going away now.
    pub fn is_going_away(&self) -> bool {
        self.going_away.load(Ordering::Acquire)
    }

    /// Changes when the machine goes away from now on.
    pub fn away(&self) -> tokio::sync::watch::Receiver<u64> {
        self.away.subscribe()
    }
}

/// A request waiting for its machine to wake ([`Load::wait_for_wake`]).
#[derive(Debug)]
pub struct WakeWait(Arc<Load>);

impl Drop for WakeWait {
    fn drop(&mut self) {
        self.0.touch();
        self.0.waking.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A unit of load held while a request or connection is in flight.
#[derive(Debug)]
pub struct Slot(Arc<Load>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
        // Only when someone waits: notifying takes a lock every worker would share.
        if self.0.freed.waiting.load(Ordering::Acquire) > 0 {
            self.0.freed.notify.notify_waiters();
        }
    }
}

impl Slot {
    /// The machine's load.
    pub fn load(&self) -> &Arc<Load> {
        &self.0
    }
}

/// Loads of every machine.
#[derive(Debug)]
pub struct Loads {
    /// Tells instances apart in the per-thread cache.
    id: u64,
    /// Bumped when machines are forgotten: per-thread caches start over.
    generation: AtomicU64,
    inner: Mutex<HashMap<String, Arc<Load>>>,
    freed: Arc<Freed>,
}

/// Wakes requests waiting for a slot on any machine.
#[derive(Debug, Default)]
struct Freed {
    notify: Notify,
    /// Requests waiting now.
    waiting: AtomicUsize,
}

/// Counts a waiter for as long as it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Default for Loads {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            inner: Mutex::default(),
            freed: Arc::default(),
        }
    }
}

type LoadCache = (u64, u64, HashMap<String, Arc<Load>>);

thread_local! {
    /// This thread's view of one [`Loads`] (instance, generation, records): every request
    /// looks up its machines' loads, and a lock shared by all workers would be taken each time.
    static CACHE: std::cell::RefCell<LoadCache> = std::cell::RefCell::new((u64::MAX, 0, HashMap::new()));
}

impl Loads {
    /// Reads a machine's load record without taking a reference to it: `pick` looks at every
    /// candidate per request, and a reference count both workers write would be touched each
    /// time.
    pub fn with<R>(&self, id: &str, f: impl FnOnce(&Load) -> R) -> R {
        let generation = self.generation.load(Ordering::Acquire);
        // `Ok`: read from this thread's cache; `Err`: not there, `f` comes back unused.
        let read = CACHE.with(|c| {
            let c = c.borrow();
            match c.2.get(id) {
                Some(l) if c.0 == self.id && c.1 == generation => Ok(f(l)),
                _ => Err(f),
            }
        });
        match read {
            Ok(r) => r,
            Err(f) => f(&self.get(id)),
        }
    }

    /// The load record of a machine (made on first use).
    pub fn get(&self, id: &str) -> Arc<Load> {
        let generation = self.generation.load(Ordering::Acquire);
        let cached = CACHE.with(|c| {
            let c = c.borrow();
            (c.0 == self.id && c.1 == generation)
                .then(|| c.2.get(id).cloned())
                .flatten()
        });
        if let Some(l) = cached {
            return l;
        }
        let l = self.get_shared(id);
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != self.id || c.1 != generation {
                *c = (self.id, generation, HashMap::new());
            }
            c.2.insert(id.to_string(), Arc::clone(&l));
        });
        l
    }

    fn get_shared(&self, id: &str) -> Arc<Load> {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = m.get(id) {
            return l.clone();
        }
        m.entry(id.to_string())
            .or_insert_with(|| {
                let l = Load {
                    freed: self.freed.clone(),
                    ..Load::default()
                };
                l.last_active_ms.store(now_ms(), Ordering::Release);
                Arc::new(l)
            })
            .clone()
    }

    /// Takes a slot on a machine (the caller decided it may).
    pub fn acquire(&self, id: &str) -> Slot {
        let l = self.get(id);
        l.in_flight.fetch_add(1, Ordering::AcqRel);
        l.touch();
        Slot(l)
    }

    /// [`Loads::acquire`] only while fewer than `limit` are in flight on the machine, as
    /// one atomic step: requests released together (a wake's waiters) can not all pass a
    /// check and then all take a slot.
    pub fn try_acquire(&self, id: &str, limit: usize) -> Option<Slot> {
        let l = self.get(id);
        l.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        l.touch();
        Some(Slot(l))
    }

    /// Resolves when a slot is freed on any machine.
    pub async fn any_freed(&self) {
        let notified = self.freed.notify.notified();
        self.freed.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.freed.waiting);
        notified.await;
    }

    /// Requests or connections in flight on every machine.
    pub fn total_in_flight(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|l| l.in_flight())
            .sum()
    }

    /// The load record of a machine, if it has one.
    pub fn peek(&self, id: &str) -> Option<Arc<Load>> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Tells every machine's long-lived connections to end (the proxy is stopping).
    pub fn all_go_away(&self) {
        for l in self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            l.go_away();
        }
    }

    /// Forgets machines that are gone.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let before = m.len();
        m.retain(|id, l| live(id) || l.in_flight() > 0);
        if m.len() != before {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Round-robin among equals, per thread (a counter shared by the workers would be written
    /// by each of them per request).
    fn next_tie(&self) -> usize {
        thread_local! {
            static TIE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        }
        TIE.with(|t| {
            let n = t.get();
            t.set(n.wrapping_add(1));
            n
        })
    }
}

/// Soft and hard limits of a machine's service on a port.
pub fn limits(m: &MachineEntry, port: u16) -> (usize, usize) {
    service_limits(m.service_for(port))
}

/// Soft and hard limits of a service (the defaults without one).
pub fn service_limits(s: Option<&hangar_api_types::MachineService>) -> (usize, usize) {
    let c = s.and_then(|s| s.concurrency.as_ref());
    let hard = c
        .and_then(|c| c.hard_limit)
        .and_then(|v| usize::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(DEFAULT_HARD_LIMIT);
    let soft = c
        .and_then(|c| c.soft_limit)
        .and_then(|v| usize::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(DEFAULT_SOFT_LIMIT.min(hard))
        .min(hard);
    (soft, hard)
}

/// Region distances: 0 to itself, then by a configurable map, else 1000.
#[derive(Debug, Clone, Default)]
pub struct Regions {
    /// This proxy's region.
    pub local: String,
    /// `(a, b)` → distance (symmetric; any unit, e.g. ms RTT).
    pub distances: HashMap<(String, String), u32>,
}

impl Regions {
    /// Distance from this proxy to `region`.
    pub fn distance(&self, region: &str) -> u32 {
        if region == self.local {
            return 0;
        }
        let a = (self.local.clone(), region.to_string());
        let b = (region.to_string(), self.local.clone());
        self.distances
            .get(&a)
            .or_else(|| self.distances.get(&b))
            .copied()
            .unwrap_or(1000)
    }
}

/// The request's routing wishes (headers and replays).
#[derive(Debug, Clone, Default)]
pub struct Prefs {
    /// Only this machine.
    pub force_instance: Option<String>,
    /// This machine if it can take the request.
    pub prefer_instance: Option<String>,
    /// Only these regions, in order.
    pub force_regions: Vec<String>,
    /// These regions first, in order.
    pub prefer_regions: Vec<String>,
    /// Never these machines (`elsewhere`, failed attempts).
    pub exclude: Vec<String>,
}

/// What to do with a request.
#[derive(Debug, Clone)]
pub enum Pick<'a> {
    /// Send it to this started machine.
    Route(&'a Arc<MachineEntry>),
    /// Start this machine, then send it there.
    Wake(&'a Arc<MachineEntry>),
    /// Every candidate is at its hard limit: wait for a slot.
    Full,
    /// Nothing can take it.
    None,
}

/// Whether a machine's service on a public port passes its checks.
pub type Healthy<'a> = &'a dyn Fn(&MachineEntry, u16) -> bool;

fn routable(m: &MachineEntry, port: u16, healthy: Healthy<'_>) -> bool {
    m.state == State::Started && healthy(m, port)
}

/// A machine a request can wait for: one starting anyway, or (with autostart) one that is
/// created and not launched (`skip_launch`), stopped, suspended, or on its way there.
fn startable(m: &MachineEntry, port: u16) -> bool {
    match m.state {
        State::Starting => true,
        State::Created
        | State::Stopped
        | State::Suspended
        | State::Stopping
        | State::Suspending => m
            .service_for(port)
            .is_some_and(|s| s.autostart.unwrap_or(true)),
        _ => false,
    }
}

/// The reference's region aliases (§3.6: `fly-replay` `region`, and the routing headers) and
/// the regions of its map each stands for. A platform whose regions have other names just
/// does not match them.
const REGION_ALIASES: &[(&str, &[&str])] = &[
    ("us", US),
    ("usa", US),
    (
        "na",
        &[
            "atl", "bos", "den", "dfw", "ewr", "iad", "lax", "mia", "ord", "phx", "sea", "sjc",
            "gdl", "qro", "yul", "yyz",
        ],
    ),
    ("sa", &["bog", "eze", "gig", "gru", "scl"]),
    (
        "eu",
        &["ams", "arn", "cdg", "fra", "lhr", "mad", "otp", "waw"],
    ),
    ("apac", &["bom", "hkg", "nrt", "sin", "syd"]),
];
const US: &[&str] = &[
    "atl", "bos", "den", "dfw", "ewr", "iad", "lax", "mia", "ord", "phx", "sea", "sjc",
];

/// Whether `entry` of a region list (a region, or an alias such as `eu`) covers `region`.
pub fn region_matches(entry: &str, region: &str) -> bool {
    entry == region
        || REGION_ALIASES
            .iter()
            .any(|(alias, rs)| *alias == entry && rs.contains(&region))
}

/// Chooses a machine of `app` for a request on public `port`.
pub fn pick<'a>(
    app: &'a AppEntry,
    port: u16,
    prefs: &Prefs,
    loads: &Loads,
    regions: &Regions,
    healthy: Healthy<'_>,
) -> Pick<'a> {
    // One pass over the app's machines, one load lookup each; then the candidates sorted by
    // region tier (forced or preferred order, distance, name) and walked tier by tier.
    struct Candidate<'a> {
        tier: (usize, u32, &'a str),
        m: &'a Arc<MachineEntry>,
        load: usize,
    }
    let mut candidates: Vec<Candidate<'_>> = Vec::with_capacity(app.machines.len());
    // A machine autostop is draining gets nothing new; when it is all there is, the request
    // waits (as for a full one) until it is stopping, then wakes it, rather than failing:
    // under load the catalog can take a while to show the stop that ends the drain.
    let mut any_draining = false;
    for m in &app.machines {
        if m.cordoned
            || m.service_for(port).is_none()
            || prefs.exclude.contains(&m.id)
            || prefs.force_instance.as_ref().is_some_and(|f| *f != m.id)
            || (!prefs.force_regions.is_empty()
                && !prefs
                    .force_regions
                    .iter()
                    .any(|r| region_matches(r, &m.region)))
        {
            continue;
        }
        let Some(load) = loads.with(&m.id, |l| {
            (!l.draining.load(Ordering::Acquire)).then(|| l.in_flight())
        }) else {
            any_draining = true;
            continue;
        };
        let order = prefs
            .force_regions
            .iter()
            .chain(prefs.prefer_regions.iter())
            .position(|r| region_matches(r, &m.region))
            .unwrap_or(usize::MAX);
        candidates.push(Candidate {
            tier: (order, regions.distance(&m.region), m.region.as_str()),
            m,
            load,
        });
    }
    if let Some(want) = &prefs.prefer_instance
        && let Some(c) = candidates.iter().find(|c| c.m.id == *want)
    {
        let (_, hard) = limits(c.m, port);
        if routable(c.m, port, healthy) && c.load < hard {
            return Pick::Route(c.m);
        }
    }
    candidates.sort_unstable_by(|a, b| a.tier.cmp(&b.tier).then_with(|| a.m.id.cmp(&b.m.id)));
    let mut any_full = false;
    for in_tier in candidates.chunk_by(|a, b| a.tier == b.tier) {
        // Least loaded under soft, else (after a wake) least loaded under hard; ties go
        // round-robin.
        let mut soft_min: Option<(usize, usize)> = None; // (load, how many at it)
        let mut hard_min: Option<(usize, usize)> = None;
        let mut routable_here = vec![false; in_tier.len()];
        for (i, c) in in_tier.iter().enumerate() {
            if !routable(c.m, port, healthy) {
                continue;
            }
            routable_here[i] = true;
            let (soft, hard) = limits(c.m, port);
            let slot = if c.load < soft {
                &mut soft_min
            } else if c.load < hard {
                &mut hard_min
            } else {
                any_full = true;
                continue;
            };
            *slot = match *slot {
                Some((l, n)) if l == c.load => Some((l, n + 1)),
                Some((l, n)) if l < c.load => Some((l, n)),
                _ => Some((c.load, 1)),
            };
        }
        let nth = |(load, ties): (usize, usize), under_soft: bool| {
            let k = loads.next_tie() % ties;
            in_tier
                .iter()
                .enumerate()
                .filter(|(i, c)| {
                    routable_here[*i] && c.load == load && {
                        let (soft, hard) = limits(c.m, port);
                        if under_soft {
                            c.load < soft
                        } else {
                            c.load >= soft && c.load < hard
                        }
                    }
                })
                .nth(k)
                .map(|(_, c)| c.m)
        };
        if let Some(best) = soft_min
            && let Some(m) = nth(best, true)
        {
            return Pick::Route(m);
        }
        // Everything running here is over soft (or nothing runs): wake one if we can, ones
        // already starting first, then suspended ones (they resume fastest).
        let sleeping = in_tier
            .iter()
            .filter(|c| startable(c.m, port))
            .min_by_key(|c| {
                let rank = match c.m.state {
                    State::Starting | State::Created => 0,
                    State::Suspended => 1,
                    State::Stopped => 2,
                    _ => 3,
                };
                (rank, &c.m.id)
            });
        if let Some(c) = sleeping {
            return Pick::Wake(c.m);
        }
        if let Some(best) = hard_min
            && let Some(m) = nth(best, false)
        {
            return Pick::Route(m);
        }
    }
    if any_full || any_draining {
        Pick::Full
    } else {
        Pick::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_api_types::{MachinePort, MachineService, MachineServiceConcurrency};
    use std::time::Duration;

    fn machine(id: &str, region: &str, state: State, soft: i64, hard: i64) -> Arc<MachineEntry> {
        Arc::new(MachineEntry {
            id: id.into(),
            app: "a".into(),
            region: region.into(),
            state,
            addr: "fdaa::2".parse().expect("addr"),
            cordoned: false,
            services: vec![MachineService {
                internal_port: 8080,
                ports: vec![MachinePort {
                    port: Some(80),
                    handlers: vec!["http".into()],
                    ..MachinePort::default()
                }],
                concurrency: Some(MachineServiceConcurrency {
                    soft_limit: Some(soft),
                    hard_limit: Some(hard),
                    ..MachineServiceConcurrency::default()
                }),
                ..MachineService::default()
            }],
            udp_services: Vec::new(),
            config_services: Vec::new(),
            primary_region: None,
            stop_config: None,
            suspendable: true,
            checks: Default::default(),
            revision: 1,
        })
    }

    fn app(ms: Vec<Arc<MachineEntry>>) -> AppEntry {
        AppEntry {
            name: "a".into(),
            org: "o".into(),
            network: "n".into(),
            machines: ms,
        }
    }

    fn regions() -> Regions {
        Regions {
            local: "ams".into(),
            ..Regions::default()
        }
    }

    fn id(p: &Pick) -> String {
        match p {
            Pick::Route(m) => format!("route:{}", m.id),
            Pick::Wake(m) => format!("wake:{}", m.id),
            Pick::Full => "full".into(),
            Pick::None => "none".into(),
        }
    }

    #[test]
    fn spreads_under_soft_then_uses_soft_to_hard_then_full() {
        let a = app(vec![
            machine("m1", "ams", State::Started, 2, 3),
            machine("m2", "ams", State::Started, 2, 3),
        ]);
        let loads = Loads::default();
        let p = Prefs::default();
        let mut slots = Vec::new();
        let mut seen = std::collections::HashMap::new();
        for _ in 0..6 {
            let Pick::Route(m) = pick(&a, 80, &p, &loads, &regions(), &|_, _| true) else {
                panic!("expected a route");
            };
            *seen.entry(m.id.clone()).or_insert(0) += 1;
            slots.push(loads.acquire(&m.id));
        }
        assert_eq!(seen.get("m1"), Some(&3));
        assert_eq!(seen.get("m2"), Some(&3));
        assert_eq!(
            id(&pick(&a, 80, &p, &loads, &regions(), &|_, _| true)),
            "full"
        );
        slots.pop();
        assert!(matches!(
            pick(&a, 80, &p, &loads, &regions(), &|_, _| true),
            Pick::Route(_)
        ));
        // Other ports have no candidates.
        assert_eq!(
            id(&pick(&a, 443, &p, &loads, &regions(), &|_, _| true)),
            "none"
        );
    }

    #[test]
    fn wakes_when_nothing_runs_or_everything_is_over_soft() {
        let loads = Loads::default();
        let p = Prefs::default();
        let a = app(vec![
            machine("s1", "ams", State::Stopped, 1, 5),
            machine("s2", "ams", State::Suspended, 1, 5),
        ]);
        assert_eq!(
            id(&pick(&a, 80, &p, &loads, &regions(), &|_, _| true)),
            "wake:s2"
        );
        let a = app(vec![
            machine("r1", "ams", State::Started, 1, 5),
            machine("s1", "ams", State::Stopped, 1, 5),
        ]);
        assert_eq!(
            id(&pick(&a, 80, &p, &loads, &regions(), &|_, _| true)),
            "route:r1"
        );
        let _busy = loads.acquire("r1");
        assert_eq!(
            id(&pick(&a, 80, &p, &loads, &regions(), &|_, _| true)),
            "wake:s1"
        );
    }

    #[test]
    fn nearest_region_first_and_farther_only_when_full() {
        let loads = Loads::default();
        let p = Prefs::default();
        let mut r = regions();
        r.distances.insert(("ams".into(), "fra".into()), 10);
        r.distances.insert(("ams".into(), "sjc".into()), 150);
        let a = app(vec![
            machine("sjc1", "sjc", State::Started, 1, 1),
            machine("fra1", "fra", State::Started, 1, 1),
            machine("ams1", "ams", State::Started, 1, 1),
        ]);
        assert_eq!(
            id(&pick(&a, 80, &p, &loads, &r, &|_, _| true)),
            "route:ams1"
        );
        let _a = loads.acquire("ams1");
        assert_eq!(
            id(&pick(&a, 80, &p, &loads, &r, &|_, _| true)),
            "route:fra1"
        );
        let _f = loads.acquire("fra1");
        assert_eq!(
            id(&pick(&a, 80, &p, &loads, &r, &|_, _| true)),
            "route:sjc1"
        );
        // Preferences and forcing.
        let loads = Loads::default();
        let prefer = Prefs {
            prefer_regions: vec!["sjc".into()],
            ..Prefs::default()
        };
        assert_eq!(
            id(&pick(&a, 80, &prefer, &loads, &r, &|_, _| true)),
            "route:sjc1"
        );
        let force = Prefs {
            force_regions: vec!["fra".into()],
            ..Prefs::default()
        };
        let _f = loads.acquire("fra1");
        assert_eq!(id(&pick(&a, 80, &force, &loads, &r, &|_, _| true)), "full");
        let inst = Prefs {
            force_instance: Some("sjc1".into()),
            ..Prefs::default()
        };
        assert_eq!(
            id(&pick(&a, 80, &inst, &loads, &r, &|_, _| true)),
            "route:sjc1"
        );
        let pref = Prefs {
            prefer_instance: Some("fra1".into()),
            ..Prefs::default()
        };
        // fra1 is at its hard limit: the preference falls back.
        assert_eq!(
            id(&pick(&a, 80, &pref, &loads, &r, &|_, _| true)),
            "route:ams1"
        );
    }

    #[test]
    fn requests_waiting_for_a_wake_keep_the_machine_busy() {
        let loads = Loads::default();
        let l = loads.get("m");
        l.last_active_ms.store(1, Ordering::Release);
        assert!(crate::http::idle(&l, Duration::from_secs(1)));
        let w = l.wait_for_wake();
        assert_eq!(l.waking(), 1);
        // However long ago the wait began.
        l.last_active_ms.store(1, Ordering::Release);
        assert!(!crate::http::idle(&l, Duration::from_secs(1)));
        drop(w);
        assert_eq!(l.waking(), 0);
        // The wait's end is activity: not idle for another interval.
        assert!(!crate::http::idle(&l, Duration::from_secs(1)));
        assert!(crate::http::idle(&l, Duration::ZERO));
    }

    #[test]
    fn cordoned_draining_excluded_and_no_autostart_are_skipped() {
        let loads = Loads::default();
        let mut cordoned = (*machine("c", "ams", State::Started, 5, 5)).clone();
        cordoned.cordoned = true;
        let mut manual = (*machine("m", "ams", State::Stopped, 5, 5)).clone();
        manual.services[0].autostart = Some(false);
        let a = app(vec![
            Arc::new(cordoned),
            Arc::new(manual),
            machine("d", "ams", State::Started, 5, 5),
            machine("x", "ams", State::Started, 5, 5),
        ]);
        let p = Prefs {
            exclude: vec!["x".into()],
            ..Prefs::default()
        };
        assert_eq!(
            id(&pick(&a, 80, &p, &loads, &regions(), &|_, _| true)),
            "route:d"
        );
        // Draining: skipped while another machine can take the request...
        loads.get("d").draining.store(true, Ordering::Release);
        assert_eq!(
            id(&pick(
                &a,
                80,
                &Prefs::default(),
                &loads,
                &regions(),
                &|_, _| true
            )),
            "route:x"
        );
        // ...and waited for (not given up on) when it is the only one.
        assert_eq!(
            id(&pick(&a, 80, &p, &loads, &regions(), &|_, _| true)),
            "full"
        );
        loads.get("d").draining.store(false, Ordering::Release);
        let only_cordoned = app(vec![a.machines[0].clone(), a.machines[1].clone()]);
        assert_eq!(
            id(&pick(
                &only_cordoned,
                80,
                &p,
                &loads,
                &regions(),
                &|_, _| true
            )),
            "none"
        );
        // A machine created and never launched is not started by a request either when its
        // service says `auto_start_machines = false`; with autostart it is woken.
        let mut created = (*machine("n", "ams", State::Created, 5, 5)).clone();
        created.services[0].autostart = Some(false);
        let a = app(vec![Arc::new(created.clone())]);
        assert_eq!(
            id(&pick(
                &a,
                80,
                &Prefs::default(),
                &loads,
                &regions(),
                &|_, _| true
            )),
            "none"
        );
        created.services[0].autostart = None;
        let a = app(vec![Arc::new(created)]);
        assert_eq!(
            id(&pick(
                &a,
                80,
                &Prefs::default(),
                &loads,
                &regions(),
                &|_, _| true
            )),
            "wake:n"
        );
    }

    #[test]
    fn try_acquire_never_passes_the_limit_even_from_many_threads() {
        let loads = Arc::new(Loads::default());
        let a = loads.try_acquire("m", 2).expect("first");
        let b = loads.try_acquire("m", 2).expect("second");
        assert!(loads.try_acquire("m", 2).is_none());
        drop(a);
        let c = loads.try_acquire("m", 2).expect("freed");
        drop((b, c));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (loads, most) = (Arc::clone(&loads), Arc::clone(&most));
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if let Some(slot) = loads.try_acquire("m", 3) {
                            most.fetch_max(loads.get("m").in_flight(), Ordering::SeqCst);
                            drop(slot);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(most.load(Ordering::SeqCst) <= 3);
        assert_eq!(loads.get("m").in_flight(), 0);
    }

    #[test]
    fn region_aliases_cover_their_regions() {
        assert!(region_matches("fra", "fra"));
        assert!(region_matches("eu", "fra"));
        assert!(region_matches("na", "yyz") && !region_matches("us", "yyz"));
        assert!(region_matches("usa", "iad"));
        assert!(!region_matches("eu", "iad") && !region_matches("apac", "local"));
        // A replay to `eu` reaches the European machine, not the nearer American one.
        let loads = Loads::default();
        let a = app(vec![
            machine("i", "iad", State::Started, 5, 5),
            machine("f", "fra", State::Started, 5, 5),
        ]);
        let p = Prefs {
            force_regions: vec!["eu".into()],
            ..Prefs::default()
        };
        assert_eq!(
            id(&pick(&a, 80, &p, &loads, &regions(), &|_, _| true)),
            "route:f"
        );
    }

    #[test]
    fn machines_failing_their_checks_get_nothing() {
        let loads = Loads::default();
        let a = app(vec![
            machine("sick", "ams", State::Started, 5, 5),
            machine("well", "ams", State::Started, 5, 5),
        ]);
        let p = Prefs::default();
        let healthy = |m: &MachineEntry, _: u16| m.id != "sick";
        for _ in 0..4 {
            assert_eq!(
                id(&pick(&a, 80, &p, &loads, &regions(), &healthy)),
                "route:well"
            );
        }
        // A machine on its way up or down is waited for, not given up on.
        for state in [State::Starting, State::Stopping] {
            let a = app(vec![machine("m", "ams", state, 5, 5)]);
            assert_eq!(
                id(&pick(&a, 80, &p, &loads, &regions(), &healthy)),
                "wake:m"
            );
        }
        let none = |_: &MachineEntry, _: u16| false;
        assert_eq!(id(&pick(&a, 80, &p, &loads, &regions(), &none)), "none");
    }
}
