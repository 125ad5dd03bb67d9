//! Wire types of the Machines API v1 (flaps), serialised exactly as the reference platform does.
//!
//! This crate owns the JSON shapes of the Machines API: requests, responses and the
//! Machine configuration, with the reference platform's quirks (Go duration strings,
//! `autostop` as bool-or-string, omitted empty fields, open string enums that keep
//! unknown values). Everything is re-exported at the crate root.
//!
//! It must not do IO, HTTP or SQL, and holds no business rules beyond what is needed
//! to read and write the wire format faithfully.
//!
//! ```
//! use hangar_api_types::{Autostop, Duration, MachineConfig};
//!
//! let cfg: MachineConfig = serde_json::from_str(
//!     r#"{"image": "nginx", "services": [{"protocol": "tcp", "internal_port": 80,
//!         "autostop": "suspend", "checks": [{"type": "tcp", "interval": "15s"}]}]}"#,
//! )
//! .expect("valid config");
//! assert_eq!(cfg.services[0].autostop, Some(Autostop::Suspend));
//! assert_eq!(cfg.services[0].checks[0].interval, Some(Duration::from_secs(15)));
//! assert_eq!(Duration::parse_go("1m21s").map(|d| d.to_string()), Ok("1m21s".to_owned()));
//! ```

#![warn(missing_docs)]

mod serde_util;

pub mod app;
pub mod certificates;
pub mod config;
pub mod duration;
pub mod enums;
pub mod error;
pub mod lease;
pub mod logs;
pub mod machine;
pub mod platform;
pub mod requests;
pub mod secrets;
pub mod service;
pub mod volume;
pub mod wireguard;

pub use app::*;
pub use certificates::*;
pub use config::*;
pub use duration::*;
pub use enums::*;
pub use error::*;
pub use lease::*;
pub use logs::*;
pub use machine::*;
pub use platform::*;
pub use requests::*;
pub use secrets::*;
pub use service::*;
pub use volume::*;
pub use wireguard::*;

/// serde, for use by [`wire_enum!`] expansions in other crates.
#[doc(hidden)]
pub use serde as __serde;
