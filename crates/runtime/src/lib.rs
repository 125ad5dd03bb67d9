//! Hangar's host-side container driver: a prepared rootfs plus a [`ContainerSpec`] become a
//! real, isolated, supervised process.
//!
//! # What this crate owns
//! - The [`Driver`] trait, the agent's only way to run machines, and its real implementation
//!   [`LinuxDriver`]: youki's `libcontainer` in-process (no runtime binary, no shim), new mount,
//!   pid, uts, ipc and network namespaces (or joining the network namespace the networking code
//!   made), cgroup limits (v1, hybrid and pure v2), a default seccomp allow-list,
//!   no-new-privileges, Docker's default capabilities plus `NET_ADMIN`, `/dev/net/tun`, masked
//!   `/proc` paths and a read-only `/sys`.
//! - `hangar-init` (module [`init`], binary `src/bin/hangar-init.rs`): PID 1 of every machine.
//!   It starts the app in its own process group, forwards signals to it, reaps zombies, writes
//!   the app's stdout/stderr to bounded, rotated log files and records the exit status in a
//!   host-visible file. Everything a machine needs at run time is in the machine itself, so
//!   machines outlive the daemon: the daemon can be SIGKILLed and a new one re-adopts them with
//!   [`Driver::list`].
//! - The on-disk state of containers under the driver's state directory (see [`layout`]), and
//!   cgroup reading helpers ([`cgroup`]) for stats, OOM kills and the freezer (Hangar's
//!   suspend/resume).
//!
//! # What it must not do
//! - Decide policy: restart policies, the machine state machine, stop timeouts chosen by the
//!   user, image entrypoint/cmd/env/user resolution and `FLY_*` variables belong to the agent and
//!   the domain crate; this crate gets the final argv, env, uid and gid.
//! - Pull or unpack images or mount the rootfs (the image crate), create network namespaces,
//!   veths or addresses (the networking crate), or talk HTTP or SQL.
//! - Sit in a machine's data path: logs are written by the machine's own init, exits are read
//!   from files and pidfds, so a daemon restart loses nothing.
//!
//! # Who is the parent of a machine
//! libcontainer clones an intermediate process which clones the container's init with
//! `CLONE_PARENT`, so the init (hangar-init, PID 1 in its namespace) is a child of the daemon
//! while the daemon lives: this instance reaps it through a pidfd (`waitid(P_PIDFD)`) and gets
//! its real wait status. The daemon does not set `PR_SET_CHILD_SUBREAPER`: when it dies, the init
//! is reparented to the host's init (or the nearest subreaper) and keeps running. A new daemon
//! finds it again by the pid and start time recorded in the state directory, watches it with a
//! pidfd (which works for non-children) and reads the exit file hangar-init wrote. An init that
//! died without writing it was killed with SIGKILL (the only signal that can end a pid
//! namespace's init from outside): that is reported as signal 9.
//!
//! # The static init
//! hangar-init is bind-mounted read-only at `/.hangar/init` into images of any libc, so it must
//! be static. There is no musl target on this toolchain; a static glibc build works:
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p hangar-runtime
//! --bin hangar-init --no-default-features --target x86_64-unknown-linux-gnu`
//! (the explicit `--target` keeps the flag away from build scripts and proc macros; without
//! default features only `nix` is compiled). The caller passes its path in
//! [`LinuxDriverConfig::init_binary`]; [`testing::static_init`] builds it once for tests.
//!
//! # Caveats (see `docs` in the items)
//! - libcontainer clones from the calling process. Done from a multi-threaded daemon, the child
//!   between clone and exec must not take a lock another thread held (malloc arenas, the
//!   tracing writer); youki's code does allocate there. The risk is small and is accepted for the
//!   7–15 ms in-process start; the fallback, if it ever bites, is a single-threaded spawner
//!   process doing the same calls.
//! - libcontainer marks the calling process non-dumpable (`PR_SET_DUMPABLE` 0) on every create.

#[cfg(feature = "driver")]
pub mod cgroup;
#[cfg(feature = "driver")]
mod driver;
mod error;
pub mod init;
#[cfg(feature = "driver")]
pub mod layout;
#[cfg(feature = "driver")]
mod linux;
#[cfg(feature = "driver")]
mod oci;
#[cfg(feature = "driver")]
mod seccomp;
#[cfg(feature = "driver")]
mod spec;
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "driver")]
pub use driver::{ContainerInfo, ContainerState, Driver, ExitStatus, Signal, Started, Stats};
pub use error::{Error, Result};
#[cfg(feature = "driver")]
pub use linux::{LinuxDriver, LinuxDriverConfig};
#[cfg(feature = "driver")]
pub use spec::{BindMount, ContainerId, ContainerSpec, Resources};
