//! Hangar's host-side container driver: a prepared rootfs plus a [`ContainerSpec`] become a
//! real, isolated, supervised process.
//!
//! # What this crate owns
//! - The [`Driver`] trait, the agent's only way to run machines, and its real implementation
//!   [`LinuxDriver`]: youki's `libcontainer` (no runtime binary to install), new mount, pid,
//!   uts, ipc, cgroup and network namespaces (or joining the network namespace the networking
//!   code made), cgroup limits (v1, hybrid and pure v2), a default seccomp allow-list,
//!   no-new-privileges, Docker's default capabilities minus MKNOD plus `NET_ADMIN`,
//!   `/dev/net/tun`, masked `/proc` paths and a read-only `/sys`.
//! - `hangar-init` (binary `src/bin/hangar-init.rs`), with two jobs:
//!   - PID 1 of every machine ([`init`]): starts the app in its own process group, forwards
//!     signals to it, reaps zombies, writes the app's stdout/stderr to bounded, rotated log
//!     files and records the exit status in a host-visible file. Everything a machine needs at
//!     run time is in the machine itself, so machines outlive the daemon: the daemon can be
//!     SIGKILLed and a new one re-adopts them with [`Driver::list`].
//!   - on the host, the create helper ([`create`]): libcontainer's create runs in that fresh
//!     single-threaded process, not in the daemon (see below).
//! - The on-disk state of containers under the driver's state directory ([`layout`]) and
//!   cgroup helpers ([`cgroup`]): stats, OOM kills, and the freezer, which is Hangar's
//!   suspend/resume (freeze the machine's cgroup, thaw it in place).
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
//! # libcontainer runs in a helper process, not in the daemon
//! The design called for libcontainer in-process. It is not safe in a multi-threaded process:
//! libcontainer clones with raw `clone3` (no fork handlers) and the clone then runs Rust code
//! that takes std's environment lock and allocates before it execs; if another thread held such
//! a lock at that instant, the child waits forever and the create hangs. The integration tests
//! hit exactly that (another thread's `env::temp_dir()` held the env lock). So
//! [`Driver::create`] runs `hangar-init --hangar-create …`, which does the same libcontainer
//! calls single-threaded and exits; start, signals, freezer, stats and delete stay in-process
//! (they do not fork). The cost is one exec of a static binary.
//!
//! # Who is the parent of a machine
//! libcontainer's intermediate process clones the container's init with `CLONE_PARENT`, so the
//! init is the create helper's child; when the helper exits the init is reparented to the
//! daemon, which [`LinuxDriver::new`] makes a child subreaper (`PR_SET_CHILD_SUBREAPER`). While
//! the daemon lives it reaps inits through pidfds (`waitid(P_PIDFD)`) and gets real wait
//! statuses. When it dies, the inits are reparented to the host's init (or the next subreaper)
//! and keep running; a new daemon finds them by the pid and start time recorded in the state
//! directory, watches them with pidfds (which work for non-children) and reads the exit file
//! hangar-init wrote. An init that died without writing it was killed with SIGKILL, the only
//! signal that ends a pid namespace's init from outside: that is reported as signal 9.
//! Consequence for the embedding daemon: it becomes the reaper of every orphaned descendant.
//!
//! # Building the static init
//! hangar-init is bind-mounted read-only at `/.hangar/init` into images of any libc, so it
//! must be static. There is no musl target on this toolchain; a static glibc build works:
//!
//! ```text
//! RUSTFLAGS="-C target-feature=+crt-static" LIBSECCOMP_LINK_TYPE=static \
//! LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
//! cargo build --release -p hangar-runtime --bin hangar-init --target x86_64-unknown-linux-gnu
//! ```
//!
//! The explicit `--target` keeps the flag away from build scripts and proc macros; the static
//! libseccomp comes with Debian's `libseccomp-dev`. The caller passes the binary's path in
//! [`LinuxDriverConfig::init_binary`]; `testing::static_init` builds it once for tests and
//! benchmarks (or takes `HANGAR_INIT_BINARY`). Without default features the binary is the init
//! alone (`--no-default-features`: only `nix`), which cannot create containers.
//!
//! # Host packages
//! Build: `libseccomp-dev`, `pkg-config`. Tests and benchmarks: `busybox-static` (the test
//! rootfs); the runc comparison script: `runc`.
//!
//! # Known limits
//! - Signal dispositions the daemon set to "ignore" are inherited by apps (hangar-init only
//!   resets SIGPIPE, through std, because resetting others needs unsafe code): hangard must not
//!   ignore signals other than SIGPIPE.
//! - libcontainer marks the calling process non-dumpable (`PR_SET_DUMPABLE` 0) when it
//!   creates; that now happens in the helper only.
//! - A new network namespace has only `lo`, down; bringing interfaces up is the networking
//!   code's job.

#[cfg(feature = "driver")]
pub mod cgroup;
#[cfg(feature = "driver")]
pub mod create;
#[cfg(feature = "driver")]
mod driver;
mod error;
#[cfg(feature = "driver")]
pub mod exec;
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
pub use driver::{
    ContainerInfo, ContainerState, Driver, ExecCommand, ExecOutput, ExitStatus, ProcessInfo,
    Signal, Started, Stats,
};
pub use error::{Error, Result};
#[cfg(feature = "driver")]
pub use linux::{LinuxDriver, LinuxDriverConfig};
#[cfg(feature = "driver")]
pub use spec::{BindMount, ContainerId, ContainerSpec, Resources};
