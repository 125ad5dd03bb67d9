//! `hangar-client`: a typed client of the Machines API (Hangar's and the reference's wire
//! format), and the deploy orchestration (`deploy`) the CLI runs on top of it.
//!
//! Owns: HTTP calls, their errors (the API's `{error, status}` body kept), waiting for
//! states, streaming logs and image uploads; planning and carrying out deploys (first
//! deploy, `immediate`, `rolling`, `canary`, `bluegreen`, release commands, rollback); single
//! machines from flags (`machine`: run, update with its diff, clone) and `scale vm|memory`.
//!
//! Must not: print (callers decide how to show progress: `deploy::Progress`), read flags,
//! or talk to the store or the host directly.

pub mod api;
pub mod certs;
pub mod deploy;
pub mod machine;
pub mod pack;
pub mod scale;
pub mod wireguard;

pub use api::{Client, ClientError, LogFilter};
