//! `hangar-domain`: the nouns and rules every plane agrees on.
//!
//! Owns typed ids and names (parsed at the edge, so handlers never see a raw string), the
//! machine lifecycle state machine (only legal transitions exist), and the restart-policy
//! decision. Pure: no IO, no clock (callers pass times), no randomness (callers pass bytes).

pub mod applog;
pub mod flycast;
pub mod guest;
pub mod host;
pub mod id;
pub mod image_ref;
pub mod lifecycle;
pub mod restart;
pub mod sixpn;
pub mod time;
pub mod tls;

pub use applog::{
    AppLogFollow, AppLogLine, AppLogQuery, AppLogs, HttpInfo, Level, LogCursor, PlatformLog,
    Provider,
};
pub use host::{
    ExecCommand, ExecResult, HostError, HostFuture, ImportedImage, LogFollow, LogLine, LogSource,
    Logs, MachineHost, Resumer,
};
pub use id::{AppName, IdError, InstanceId, MachineId, MachineName, OrgSlug, PeerName, VolumeId};
pub use lifecycle::{Action, IllegalTransition, Phase, State};
pub use restart::{ExitInfo, RestartDecision, RestartTracker};
