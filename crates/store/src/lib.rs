//! `hangar-store`: durable state, and the only crate that speaks SQL.
//!
//! Owns orgs, tokens, apps, machines (config, observed state, versions, events), leases,
//! volumes and their snapshots, WireGuard peers (public keys and addresses),
//! custom hostnames with their certificates and ACME accounts (private keys sealed with a
//! host key, [`Sealer`]), and the change log every consumer watches. Every write happens in one transaction that
//! also appends to the change log and bumps the store revision, so a consumer that remembers
//! a revision can catch up with [`Store::changes_since`] after any gap (principle: push, not
//! poll; consumers can always resync).
//!
//! The [`Store`] trait is the seam: [`SqliteStore`] is the embedded single-host
//! implementation (WAL, migrations); a PostgreSQL implementation for clusters satisfies the
//! same trait (revisions map to a sequence, notifications to LISTEN/NOTIFY).
//!
//! Must not: know HTTP, run containers, or hold business rules beyond integrity (unique
//! names, lease ownership, legal state transitions are checked by callers through
//! `hangar-domain` before they write).

mod checkpoint;
mod error;
mod follow;
mod ips;
mod model;
mod networks;
mod schema;
mod seal;
mod sqlite;
mod volumes;
mod wireguard;

pub use checkpoint::{BACKSTOP_PAGES, CHECKPOINT_EVERY, WalStats};
pub use error::StoreError;
pub use follow::follow;
pub use ips::{FLYCAST, IpAssignmentRecord};
pub use model::NetworkRecord;
pub use model::SecretRecord;
pub use model::{
    AcmeAccountRecord, AppRecord, CertificateRecord, Change, CheckRecord, EventRecord, LeaseRecord,
    MachineRecord, OrgRecord, PendingOp, SnapshotRecord, StoredCert, TokenScope, VersionRecord,
    VolumeRecord,
};
pub use networks::DEFAULT_NETWORK;
pub use seal::{SealError, Sealer};
pub use wireguard::{WireguardPeerRecord, peer_key};

/// One change to an app's secrets: the name, and the sealed value with its digest (or `None`
/// to remove it).
pub type SecretChange = (String, Option<(Vec<u8>, String)>);

/// The seal context of an app secret: a sealed value opens only for its app and name.
pub fn secret_context(app: &str, name: &str) -> Vec<u8> {
    format!("secret:{app}:{name}").into_bytes()
}
pub use sqlite::SqliteStore;

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The state store. Methods are synchronous and short (single-row SQLite transactions take
/// microseconds); async callers may call them directly.
pub trait Store: Send + Sync + 'static {
    /// Creates an org; `name_taken` if the slug exists.
    fn create_org(&self, slug: &str, name: &str, now_ms: i64) -> Result<OrgRecord>;
    /// An org by slug.
    fn get_org(&self, slug: &str) -> Result<Option<OrgRecord>>;
    /// Every org.
    fn list_orgs(&self) -> Result<Vec<OrgRecord>>;

    /// Stores a token by the SHA-256 of its secret.
    fn create_token(&self, hash: &str, scope: &TokenScope, name: &str, now_ms: i64) -> Result<()>;
    /// The scope of a token hash, if it exists.
    fn token_scope(&self, hash: &str) -> Result<Option<TokenScope>>;
    /// True when at least one admin token exists.
    fn has_admin_token(&self) -> Result<bool>;

    /// Creates an app; `name_taken` when the name is used in any org.
    fn create_app(&self, app: &AppRecord) -> Result<()>;
    /// An app by name.
    fn get_app(&self, name: &str) -> Result<Option<AppRecord>>;
    /// The apps of an org (all apps when `org` is None).
    fn list_apps(&self, org: Option<&str>) -> Result<Vec<AppRecord>>;
    /// Deletes an app and everything of it; false if it did not exist.
    fn delete_app(&self, name: &str) -> Result<bool>;

    /// Inserts a new machine (and its first version); `name_taken` if the name is used in the app.
    fn insert_machine(&self, m: &MachineRecord) -> Result<()>;
    /// A machine by app and id.
    fn get_machine(&self, app: &str, id: &str) -> Result<Option<MachineRecord>>;
    /// A machine by id alone.
    fn find_machine(&self, id: &str) -> Result<Option<MachineRecord>>;
    /// The machines of an app, oldest first; destroyed ones only with `include_destroyed`.
    fn list_machines(&self, app: &str, include_destroyed: bool) -> Result<Vec<MachineRecord>>;
    /// Every machine not destroyed (the agent's view at start).
    fn all_live_machines(&self) -> Result<Vec<MachineRecord>>;
    /// Replaces a machine row if its `revision` still equals `expected_revision`
    /// (optimistic concurrency); returns the stored record with its new revision.
    fn update_machine(&self, m: &MachineRecord, expected_revision: u64) -> Result<MachineRecord>;
    /// [`Store::update_machine`] and [`Store::add_event`] in one transaction: one commit and
    /// one change for watchers (a wake's start waits on it).
    fn update_machine_with_event(
        &self,
        m: &MachineRecord,
        expected_revision: u64,
        e: &EventRecord,
    ) -> Result<MachineRecord>;
    /// Records a new config version of a machine.
    fn add_version(&self, v: &VersionRecord) -> Result<()>;
    /// Versions of a machine, newest first.
    fn versions(&self, machine_id: &str) -> Result<Vec<VersionRecord>>;
    /// Appends an event to a machine (events are capped per machine; oldest dropped).
    fn add_event(&self, e: &EventRecord) -> Result<()>;
    /// Events of a machine, newest first.
    fn events(&self, machine_id: &str, limit: usize) -> Result<Vec<EventRecord>>;
    /// The newest `limit` events of every machine of `app` (one query; listing an app's
    /// machines), by machine id, newest first.
    fn app_events(
        &self,
        app: &str,
        limit: usize,
    ) -> Result<std::collections::HashMap<String, Vec<EventRecord>>>;
    /// The check results of every machine of `app`, by machine id (each by name).
    fn app_checks(&self, app: &str) -> Result<std::collections::HashMap<String, Vec<CheckRecord>>>;

    /// Acquires (or, with the holder's nonce, refreshes) a lease. A foreign unexpired lease
    /// gives `LeaseHeld`.
    fn acquire_lease(
        &self,
        lease: &LeaseRecord,
        holder_nonce: Option<&str>,
        now_ms: i64,
    ) -> Result<LeaseRecord>;
    /// The lease on a machine if unexpired.
    fn get_lease(&self, machine_id: &str, now_ms: i64) -> Result<Option<LeaseRecord>>;
    /// Releases a lease held with `nonce`.
    fn release_lease(&self, machine_id: &str, nonce: &str, now_ms: i64) -> Result<()>;

    /// Records the latest result of a machine's health check (a `machine` change).
    fn set_check(&self, machine_id: &str, check: &CheckRecord) -> Result<()>;
    /// Forgets a machine's check results (it stopped: they say nothing any more).
    fn clear_checks(&self, machine_id: &str) -> Result<()>;
    /// The latest results of a machine's checks, by name.
    fn checks(&self, machine_id: &str) -> Result<Vec<CheckRecord>>;

    /// Adds a custom hostname to an app (a `certificate` change); `name_taken` when any app
    /// has it, `NotFound("app")` when the app does not exist. Returns it with its revision.
    fn create_certificate(&self, c: &CertificateRecord) -> Result<CertificateRecord>;
    /// A custom hostname by name.
    fn get_certificate(&self, hostname: &str) -> Result<Option<CertificateRecord>>;
    /// The custom hostnames of an app (all when `app` is None), by hostname.
    fn list_certificates(&self, app: Option<&str>) -> Result<Vec<CertificateRecord>>;
    /// Replaces a hostname's row if its revision still equals `expected_revision` (`Conflict`
    /// otherwise); the app can not change.
    fn update_certificate(
        &self,
        c: &CertificateRecord,
        expected_revision: u64,
    ) -> Result<CertificateRecord>;
    /// Removes a hostname and its certificates; false if it did not exist.
    fn delete_certificate(&self, hostname: &str) -> Result<bool>;
    /// The ACME account at a directory.
    fn acme_account(&self, directory: &str) -> Result<Option<AcmeAccountRecord>>;
    /// Records (or replaces) the ACME account at its directory.
    fn put_acme_account(&self, a: &AcmeAccountRecord) -> Result<()>;

    /// Creates a volume (a `volume` change); `NotFound("app")` when the app does not exist.
    fn create_volume(&self, v: &VolumeRecord) -> Result<VolumeRecord>;
    /// A volume by id.
    fn get_volume(&self, id: &str) -> Result<Option<VolumeRecord>>;
    /// The volumes of an app (every volume when `app` is None), oldest first.
    fn list_volumes(&self, app: Option<&str>) -> Result<Vec<VolumeRecord>>;
    /// Replaces a volume's row if its revision still equals `expected_revision` (`Conflict`
    /// otherwise; the app can not change). Attaching it to a machine that already has a
    /// volume is `NameTaken` (one volume per machine). A change of the attached machine also
    /// logs a `machine` change for each machine concerned. A machine that becomes `destroyed`
    /// ([`Store::update_machine`]) detaches its volume in the same write.
    fn update_volume(&self, v: &VolumeRecord, expected_revision: u64) -> Result<VolumeRecord>;
    /// Removes a volume and its snapshots; false if it did not exist.
    fn delete_volume(&self, id: &str) -> Result<bool>;
    /// Records a snapshot (a `volume` change of its volume; `NotFound("volume")` without it).
    fn create_snapshot(&self, s: &SnapshotRecord) -> Result<()>;
    /// A snapshot by id.
    fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>>;
    /// The snapshots of a volume, newest first.
    fn list_snapshots(&self, volume_id: &str) -> Result<Vec<SnapshotRecord>>;
    /// Replaces a snapshot's status, size and digest (a `volume` change of its volume).
    fn update_snapshot(&self, s: &SnapshotRecord) -> Result<()>;
    /// Removes a snapshot; false if it did not exist.
    fn delete_snapshot(&self, id: &str) -> Result<bool>;

    /// The 6PN id of `org`'s network `network` (`default`: the org's numeric id), allocated
    /// now (a `network` change) if the network has none yet. `NotFound("org")` without the org.
    fn network_id(&self, org: &str, network: &str, now_ms: i64) -> Result<u32>;
    /// Every network: each org's `default` and the custom ones, by id.
    fn list_networks(&self) -> Result<Vec<NetworkRecord>>;

    /// Sets (`Some`) and removes (`None`) an app's secrets in one write; returns the app's new
    /// secrets version (a `secret` change keyed by the app).
    fn set_secrets(&self, app: &str, changes: &[SecretChange], now_ms: i64) -> Result<u64>;
    /// An app's secrets, by name, and its secrets version.
    fn secrets(&self, app: &str) -> Result<(Vec<SecretRecord>, u64)>;

    /// Records an address of an app (an `ip_assignment` change keyed by the app);
    /// `NotFound("app")` without the app, `NameTaken` when the app has it already, when a
    /// Flycast address is anyone's, or when the app has a Flycast address for that network.
    fn create_ip_assignment(&self, r: &IpAssignmentRecord) -> Result<()>;
    /// The addresses of an app (every app's when `app` is None), by app, oldest first.
    fn list_ip_assignments(&self, app: Option<&str>) -> Result<Vec<IpAssignmentRecord>>;
    /// Removes an address of an app; false if the app did not have it.
    fn delete_ip_assignment(&self, app: &str, ip: &str) -> Result<bool>;

    /// Records a WireGuard peer (a `wireguard` change keyed `<org>/<name>`); `NotFound("org")`
    /// without the org, `NameTaken` when the org has a peer of that name or any peer has that
    /// public key or address.
    fn create_wireguard_peer(&self, p: &WireguardPeerRecord) -> Result<()>;
    /// A peer of an org by name.
    fn get_wireguard_peer(&self, org: &str, name: &str) -> Result<Option<WireguardPeerRecord>>;
    /// The peers of an org (every peer when `org` is None), by org and name.
    fn list_wireguard_peers(&self, org: Option<&str>) -> Result<Vec<WireguardPeerRecord>>;
    /// Removes a peer; false if it did not exist.
    fn delete_wireguard_peer(&self, org: &str, name: &str) -> Result<bool>;

    /// The latest revision.
    fn revision(&self) -> u64;
    /// A receiver that sees every new revision.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Changes after `revision`, oldest first, at most `limit`.
    fn changes_since(&self, revision: u64, limit: usize) -> Result<Vec<Change>>;
}
