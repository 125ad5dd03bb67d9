//! Enumerations of the Machines API.
//!
//! Most are *open*: the platform adds values over time, so an unrecognised value is
//! kept verbatim in a catch-all variant instead of failing the whole document. The
//! [`wire_enum!`](crate::wire_enum) macro generates them. [`Autostop`] is closed and has its own
//! mixed bool/string wire form.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Generates an open string enum: known variants plus a catch-all holding any other
/// value verbatim.
///
/// The catch-all is `Unknown(String)` unless named explicitly with
/// `(other = Name)` after the enum name (needed when `"unknown"` is itself a known value).
/// The generated type derives `Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord,
/// Default` (default = first variant) and implements `as_str`, `Display`, infallible
/// `FromStr`, `From<&str>`, `From<String>`, and serde as a plain JSON string.
#[macro_export]
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(#[$fmeta:meta])* $first:ident = $fwire:literal
            $(, $(#[$vmeta:meta])* $variant:ident = $wire:literal)* $(,)?
        }
    ) => {
        $crate::wire_enum! {
            $(#[$meta])*
            $vis enum $name (other = Unknown) {
                $(#[$fmeta])* $first = $fwire
                $(, $(#[$vmeta])* $variant = $wire)*
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident (other = $other:ident) {
            $(#[$fmeta:meta])* $first:ident = $fwire:literal
            $(, $(#[$vmeta:meta])* $variant:ident = $wire:literal)* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        $vis enum $name {
            $(#[$fmeta])*
            #[default]
            $first,
            $($(#[$vmeta])* $variant,)*
            /// A value this version does not know, kept verbatim so it round-trips.
            $other(::std::string::String),
        }

        impl $name {
            /// Every known variant, in declaration order.
            pub const KNOWN: &'static [$name] = &[$name::$first $(, $name::$variant)*];

            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $name::$first => $fwire,
                    $($name::$variant => $wire,)*
                    $name::$other(s) => s.as_str(),
                }
            }

            /// Whether this is one of the known variants.
            pub fn is_known(&self) -> bool {
                !matches!(self, $name::$other(_))
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::convert::From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $fwire => $name::$first,
                    $($wire => $name::$variant,)*
                    other => $name::$other(other.to_owned()),
                }
            }
        }

        impl ::std::convert::From<::std::string::String> for $name {
            fn from(s: ::std::string::String) -> Self {
                match s.as_str() {
                    $fwire => $name::$first,
                    $($wire => $name::$variant,)*
                    _ => $name::$other(s),
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = ::std::convert::Infallible;

            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                Ok($name::from(s))
            }
        }

        impl $crate::__serde::Serialize for $name {
            fn serialize<S: $crate::__serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> $crate::__serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                let s = <::std::string::String as $crate::__serde::Deserialize>::deserialize(deserializer)?;
                Ok($name::from(s))
            }
        }
    };
}

wire_enum! {
    /// Machine lifecycle state (§2.6).
    pub enum MachineState {
        /// Created but never started (or `skip_launch`).
        Created = "created",
        /// Booting.
        Starting = "starting",
        /// Running.
        Started = "started",
        /// Shutting down.
        Stopping = "stopping",
        /// Stopped; rootfs reset on next start unless persisted.
        Stopped = "stopped",
        /// Snapshotting memory for suspend.
        Suspending = "suspending",
        /// Suspended; next start resumes the snapshot.
        Suspended = "suspended",
        /// Being replaced by a new version.
        Replacing = "replacing",
        /// Restarting.
        Restarting = "restarting",
        /// Being destroyed.
        Destroying = "destroying",
        /// Destroyed (terminal).
        Destroyed = "destroyed",
        /// Applying a config update.
        Updating = "updating",
        /// An old version superseded by an update (terminal).
        Replaced = "replaced",
        /// The old host's copy after a migration (terminal).
        Migrated = "migrated",
        /// Launch failed; becomes destroyed.
        LaunchFailed = "launch_failed",
        /// Failed.
        Failed = "failed",
        /// Being created.
        Creating = "creating",
    }
}

impl MachineState {
    /// States a Machine rests in (§2.6 "persistent").
    pub fn is_persistent(&self) -> bool {
        matches!(
            self,
            MachineState::Created
                | MachineState::Started
                | MachineState::Stopped
                | MachineState::Suspended
                | MachineState::Failed
        )
    }

    /// States a Machine never leaves (§2.6 "terminal").
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            MachineState::Destroyed | MachineState::Replaced | MachineState::Migrated
        )
    }
}

wire_enum! {
    /// Restart policy applied when a Machine's main process exits.
    pub enum RestartPolicy {
        /// Never restart.
        No = "no",
        /// Always restart, even after a clean exit.
        Always = "always",
        /// Restart after a non-zero exit, up to `max_retries` times.
        OnFailure = "on-failure",
        /// Start only while the spot price is within the bid (fly-go, GPU Machines).
        SpotPrice = "spot-price",
    }
}

wire_enum! {
    /// What a service's concurrency limits count.
    pub enum ConcurrencyType {
        /// Open TCP connections.
        Connections = "connections",
        /// In-flight HTTP requests.
        Requests = "requests",
    }
}

wire_enum! {
    /// Health-check protocol (`type` of a check).
    pub enum CheckType {
        /// TCP connect check.
        Tcp = "tcp",
        /// HTTP request check.
        Http = "http",
    }
}

wire_enum! {
    /// What a top-level check is for.
    pub enum CheckKind {
        /// Shown in status only (default for top-level checks).
        Informational = "informational",
        /// A failing check takes the Machine out of load balancing.
        Readiness = "readiness",
    }
}

wire_enum! {
    /// Result of a health check (Consul vocabulary).
    pub enum CheckStatus {
        /// Healthy.
        Passing = "passing",
        /// Degraded.
        Warning = "warning",
        /// Failing.
        Critical = "critical",
    }
}

wire_enum! {
    /// Reachability of the host running a Machine or volume.
    pub enum HostStatus (other = Other) {
        /// Host reachable; config is complete.
        Ok = "ok",
        /// Host state not known.
        Unknown = "unknown",
        /// Host unreachable; the Machine carries `incomplete_config`.
        Unreachable = "unreachable",
    }
}

wire_enum! {
    /// When a Machine's root filesystem survives (`guest.persist_rootfs`, `rootfs.persist`).
    pub enum PersistRootfs {
        /// Reset on every start.
        Never = "never",
        /// Kept across restarts, reset on stop/start.
        Restart = "restart",
        /// Always kept.
        Always = "always",
    }
}

wire_enum! {
    /// Condition a container waits for on another container (`depends_on[].condition`).
    pub enum DependencyCondition {
        /// The dependency exited with status 0.
        ExitedSuccessfully = "exited_successfully",
        /// The dependency's health checks pass.
        Healthy = "healthy",
        /// The dependency has started.
        Started = "started",
    }
}

/// What the proxy does with an idle Machine (`services[].autostop`).
///
/// Wire form (fly-go): written as JSON `false` (off), `true` (stop) or `"suspend"`;
/// read from `true`/`false` or the strings `"off"`, `"stop"`, `"suspend"`, `"false"`, `"true"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Autostop {
    /// Never stop idle Machines.
    #[default]
    Off,
    /// Stop idle Machines.
    Stop,
    /// Suspend idle Machines, falling back to stop when not possible.
    Suspend,
}

impl Autostop {
    /// Text form: `"off"`, `"stop"` or `"suspend"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Autostop::Off => "off",
            Autostop::Stop => "stop",
            Autostop::Suspend => "suspend",
        }
    }

    /// Whether idle Machines are stopped or suspended.
    pub fn is_enabled(self) -> bool {
        self != Autostop::Off
    }
}

impl From<bool> for Autostop {
    fn from(b: bool) -> Self {
        if b { Autostop::Stop } else { Autostop::Off }
    }
}

impl fmt::Display for Autostop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An autostop value other than `off`, `stop`, `suspend`, `false` or `true`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid autostop value {0:?}: expected \"off\", \"stop\" or \"suspend\"")]
pub struct AutostopError(pub String);

impl FromStr for Autostop {
    type Err = AutostopError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" | "false" => Ok(Autostop::Off),
            "stop" | "true" => Ok(Autostop::Stop),
            "suspend" => Ok(Autostop::Suspend),
            other => Err(AutostopError(other.to_owned())),
        }
    }
}

impl Serialize for Autostop {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            // Booleans for off/stop keep older clients working (fly-go does the same).
            Autostop::Off => serializer.serialize_bool(false),
            Autostop::Stop => serializer.serialize_bool(true),
            Autostop::Suspend => serializer.serialize_str("suspend"),
        }
    }
}

struct AutostopVisitor;

impl Visitor<'_> for AutostopVisitor {
    type Value = Autostop;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean or one of \"off\", \"stop\", \"suspend\"")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Autostop, E> {
        Ok(Autostop::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Autostop, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Autostop {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AutostopVisitor)
    }
}
