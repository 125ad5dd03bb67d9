//! `hangar-wireguard`: WireGuard peers (PLATFORM.md §4.5), a role of `hangard`, and
//! `hangar-wg`, a userspace WireGuard for laptops.
//!
//! Owns:
//! - [`device`]: a userspace WireGuard interface: boringtun's noise protocol between a Linux
//!   TUN interface and a UDP socket, on tokio, with cryptokey routing, bounded work and
//!   counted drops;
//! - [`uapi`]: the cross-platform UAPI socket (`/var/run/wireguard/<iface>.sock`), so Debian's
//!   `wg` and `wg-quick` (`WG_QUICK_USERSPACE_IMPLEMENTATION=hangar-wg`) drive a device;
//! - [`gateway`]: the host's WireGuard interface, its peers followed from the store's change
//!   log: each peer's `/120` routed to the interface, its network's bridge made and
//!   forwarding on, its isolation rules (`hangar_net::isolation::PeerIsolation`); kernel
//!   WireGuard when the module is there, the userspace device otherwise;
//! - [`key`]: keys in base64 and hex, the host's key file.
//!
//! Must not: write to the store, run machines, or depend on another service crate.

pub mod device;
pub mod gateway;
pub mod key;
pub mod uapi;

use std::net::SocketAddr;
use std::path::Path;

use thiserror::Error;

pub use device::{Device, DeviceConfig, PeerConfig, PeerStatus};
pub use gateway::{Gateway, GatewayConfig};
pub use key::Key;

/// What went wrong.
#[derive(Debug, Error)]
pub enum Error {
    /// A key that is not one.
    #[error("invalid key: {0}")]
    Key(String),
    /// An interface name Linux or wg-quick would refuse.
    #[error(
        "invalid interface name '{0}': 1-15 letters, digits, '-', '_', '.', starting with a letter"
    )]
    BadName(String),
    /// The TUN interface could not be made.
    #[error("can not create the TUN interface {0} (is /dev/net/tun there, and are we root?): {1}")]
    Tun(String, String),
    /// The UDP socket could not be bound.
    #[error("can not bind UDP {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// Peers need the device's private key first.
    #[error("the device has no private key yet")]
    NoPrivateKey,
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Host networking failed.
    #[error(transparent)]
    Net(#[from] hangar_net::NetError),
    /// A command failed.
    #[error("{0}")]
    Command(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;
