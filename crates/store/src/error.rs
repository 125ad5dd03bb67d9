//! Store errors.

use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A unique name is already used.
    #[error("{what} '{name}' is already taken")]
    NameTaken {
        /// What kind of name.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The row does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Someone else changed the row first (optimistic concurrency).
    #[error("machine was changed concurrently (revision {actual}, expected {expected})")]
    Conflict {
        /// The revision the caller read.
        expected: u64,
        /// The revision stored now.
        actual: u64,
    },
    /// A lease held by someone else.
    #[error("lease currently held by {owner}, expires at {expires_at}")]
    LeaseHeld {
        /// The holder.
        owner: String,
        /// Unix seconds.
        expires_at: i64,
    },
    /// A lease operation with a nonce that does not match.
    #[error("lease nonce does not match")]
    LeaseMismatch,
    /// Stored data could not be decoded (a bug or a corrupted file).
    #[error("corrupt {what}: {message}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// The change log no longer reaches back to the asked revision; resync from a full read.
    #[error("changes before revision {oldest} were compacted")]
    Compacted {
        /// Oldest revision still in the log.
        oldest: u64,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
}
