//! The crate's error type: what went wrong, in terms the agent can act on.

use std::io;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a driver operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec is unusable (bad id, relative paths, empty argv, …); nothing was changed.
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
    /// A container with this id already exists on this host.
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// No container with this id is known on this host.
    #[error("no container {0}")]
    NotFound(String),
    /// The container is not in a state that allows the operation.
    #[error("container {id} is {state}: cannot {op}")]
    WrongState {
        /// The container.
        id: String,
        /// Its state when the operation was refused.
        state: String,
        /// The refused operation.
        op: &'static str,
    },
    /// The host lacks something the driver needs (cgroups, the init binary, …).
    #[error("host not supported: {0}")]
    Host(String),
    /// An operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A file or system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The OCI runtime (libcontainer) refused or failed.
    #[error("container runtime: {0}")]
    Runtime(String),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to `io::Result`s.
#[cfg(feature = "driver")]
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

#[cfg(feature = "driver")]
impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
