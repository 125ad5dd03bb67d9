//! The create helper: `hangar-init --hangar-create LC_ROOT BUNDLE ID PID_FILE` runs
//! libcontainer's create in a fresh, single-threaded process and exits.
//!
//! Why not in the daemon's own process: libcontainer clones (raw `clone3`, no fork handlers)
//! from the calling process and its child then takes std's environment lock
//! (`env::remove_var`) and allocates before exec. Cloned from a multi-threaded daemon, that child
//! inherits any lock another thread held at that instant and waits forever; the create then
//! hangs. The integration tests hit it (another thread's `env::temp_dir()` held the env lock).
//! The helper is the static `hangar-init` binary itself, so the extra cost is one exec of a
//! static binary (no dynamic loading) on top of libcontainer's work.
//!
//! The container's init is cloned with `CLONE_PARENT` by libcontainer's intermediate process,
//! so it is this helper's child; when the helper exits it is reparented to the daemon, which
//! [`crate::LinuxDriver::new`] makes a child subreaper.

use std::ffi::OsString;
use std::path::PathBuf;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;

use crate::layout::write_atomic;

/// First argument selecting the create helper in `hangar-init`.
pub const CREATE_ARG: &str = "--hangar-create";

/// The helper's command line (after the program).
pub(crate) fn helper_args(
    libcontainer_root: PathBuf,
    bundle: PathBuf,
    id: &str,
    pid_file: PathBuf,
) -> Vec<OsString> {
    vec![
        CREATE_ARG.into(),
        libcontainer_root.into(),
        bundle.into(),
        id.into(),
        pid_file.into(),
    ]
}

/// Runs the helper with the arguments after [`CREATE_ARG`]; returns the exit code. The
/// container's init inherits this process's stdin, stdout and stderr (the daemon passes
/// `/dev/null` and the container's `init.log`). Errors go to stderr.
pub fn run(args: &[OsString]) -> i32 {
    let [root, bundle, id, pid_file] = args else {
        eprintln!("hangar-init {CREATE_ARG}: expected LC_ROOT BUNDLE ID PID_FILE");
        return 2;
    };
    let Some(id) = id.to_str() else {
        eprintln!("hangar-init {CREATE_ARG}: the id is not UTF-8");
        return 2;
    };
    let built = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(PathBuf::from(root))
        .and_then(|b| b.validate_id())
        .and_then(|b| {
            b.as_init(PathBuf::from(bundle))
                .with_systemd(false)
                .with_detach(true)
                .build()
        });
    let container = match built {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hangar-init {CREATE_ARG}: {}", error_chain(&e));
            return 1;
        }
    };
    let Some(pid) = container.pid() else {
        eprintln!("hangar-init {CREATE_ARG}: the container has no init pid");
        return 1;
    };
    if let Err(e) = write_atomic(
        &PathBuf::from(pid_file),
        pid.as_raw().to_string().as_bytes(),
    ) {
        eprintln!("hangar-init {CREATE_ARG}: writing the pid file: {e}");
        return 1;
    }
    0
}

/// An error and its sources, `: `-separated.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
