//! The crate's one error type. Each variant says what failed and on what, so the daemon can
//! put it in a machine event as is; [`Error::is_retryable`] tells whether trying again may help.

use std::io;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, DigestError};
use crate::reference::ReferenceError;

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the image store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The image reference does not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A digest string does not parse.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// Content did not hash to the digest that named it.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which content (blob, layer diff, manifest).
        what: String,
        /// The digest it was announced with.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// Content was not the announced size.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// Which content.
        what: String,
        /// Announced size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// A layer tar entry would write outside the layer, or is otherwise refused.
    #[error("unsafe layer entry {path:?}: {reason}")]
    UnsafeEntry {
        /// The path as written in the tar.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An archive (docker save / OCI layout) is malformed.
    #[error("invalid image archive: {0}")]
    InvalidArchive(String),
    /// A manifest, index or config is malformed or inconsistent.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// The format is understood but not supported.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// No image is stored under that name or digest.
    #[error("image not found: {0}")]
    NotFound(String),
    /// An index has no manifest for the wanted platform.
    #[error("no image for platform {wanted} in {reference}; available: {available}")]
    NoMatchingPlatform {
        /// The reference being resolved.
        reference: String,
        /// The wanted `os/arch`.
        wanted: String,
        /// What the index offers.
        available: String,
    },
    /// A stored layer directory is missing (removed by hand or by a GC that raced).
    #[error("layer {0} is not in the store (re-pull or re-import the image)")]
    LayerMissing(Digest),
    /// The registry refused or failed a request.
    #[error("registry {registry}: {message}")]
    Registry {
        /// Registry host.
        registry: String,
        /// HTTP status, when there was a response.
        status: Option<u16>,
        /// What happened (the registry's error message when it sent one).
        message: String,
    },
    /// The registry wants credentials we do not have, or rejected ours.
    #[error("registry {registry}: unauthorized: {message}")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Detail.
        message: String,
    },
    /// A response or file exceeded a size bound.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: String,
        /// The bound.
        limit: u64,
    },
    /// Mounting or unmounting a rootfs failed.
    #[error("{op} overlay at {target}: {source}{hint}")]
    Mount {
        /// `mount` or `unmount`.
        op: &'static str,
        /// The mount point.
        target: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
        /// A hint on the likely cause (may be empty).
        hint: String,
    },
    /// A machine directory already has a rootfs (mounted, or its upper dir) of another image.
    #[error(
        "rootfs at {target} belongs to image {current}, not {wanted}; remove it first (remove_rootfs)"
    )]
    RootfsMismatch {
        /// The mount point.
        target: PathBuf,
        /// The image digest the machine directory holds.
        current: String,
        /// The image digest asked for.
        wanted: Digest,
    },
    /// A background task died.
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// Whether the same operation may succeed if tried again (network trouble, 5xx, 429).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Registry { status, .. } => match status {
                None => true,
                Some(s) => *s == 429 || *s >= 500,
            },
            Self::DigestMismatch { .. } | Self::SizeMismatch { .. } => true,
            _ => false,
        }
    }
}

/// Adds the operation and path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e.into()))
    }
}
