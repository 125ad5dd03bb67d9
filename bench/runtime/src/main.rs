//! Per-operation latency samples (milliseconds, JSON on stdout) of the runtime layers under
//! Hangar's Machines API, for `bench/machines.sh`:
//!
//! - `bare BUNDLE ROOT N`: youki's libcontainer called in-process, single-threaded, on an OCI
//!   bundle (the same `runc spec` bundle the runc column uses): create (detached, the app
//!   waits for start), start, pause, resume; and a `run` cycle (create + start + exit) when the
//!   bundle's process exits by itself (`BARE_RUN_BUNDLE`).
//! - `driver ROOTFS STATE INIT CGROUP_PARENT N`: Hangar's `LinuxDriver` (create through the
//!   static `hangar-init` helper, start, freeze, thaw) on the same rootfs, and its create +
//!   start + exit of `/bin/true`.
//!
//! Needs root. Cleans up every container it made, also when an operation fails.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hangar_runtime::{ContainerId, ContainerSpec, Driver, LinuxDriver, LinuxDriverConfig};
use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{WaitPidFlag, waitpid};
use serde_json::{Value, json};

type Res<T> = Result<T, String>;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn reap_all() {
    // The bare containers' inits are our children (libcontainer clones them CLONE_PARENT).
    while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if s == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
}

fn bare_create(root: &Path, bundle: &Path, id: &str) -> Res<Container> {
    ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(root.to_path_buf())
        .and_then(|b| b.validate_id())
        .and_then(|b| {
            b.as_init(bundle.to_path_buf())
                .with_systemd(false)
                .with_detach(true)
                .build()
        })
        .map_err(|e| format!("libcontainer create: {e}"))
}

fn bare_delete(root: &Path, id: &str) {
    if let Ok(mut c) = Container::load(root.join(id)) {
        let _ = c.delete(true);
    }
    let _ = std::fs::remove_dir_all(root.join(id));
    reap_all();
}

fn bare(bundle: &Path, root: &Path, n: usize) -> Res<Value> {
    std::fs::create_dir_all(root).map_err(|e| e.to_string())?;
    let r = std::panic::catch_unwind(|| bare_runs(bundle, root, n));
    // Whatever happened, nothing of ours stays.
    if let Ok(dir) = std::fs::read_dir(root) {
        for e in dir.flatten() {
            bare_delete(root, &e.file_name().to_string_lossy());
        }
    }
    r.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn bare_runs(bundle: &Path, root: &Path, n: usize) -> Res<Value> {
    let (mut create, mut start, mut pause, mut resume) = (vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let id = format!("hb-bare-{}-{i}", std::process::id());
        let r = (|| -> Res<()> {
            let t = Instant::now();
            let mut c = bare_create(root, bundle, &id)?;
            create.push(ms(t));
            let t = Instant::now();
            c.start().map_err(|e| format!("libcontainer start: {e}"))?;
            start.push(ms(t));
            let t = Instant::now();
            c.pause().map_err(|e| format!("libcontainer pause: {e}"))?;
            pause.push(ms(t));
            let t = Instant::now();
            c.resume()
                .map_err(|e| format!("libcontainer resume: {e}"))?;
            resume.push(ms(t));
            Ok(())
        })();
        bare_delete(root, &id);
        r?;
    }
    let mut out = json!({"create": create, "start": start, "pause": pause, "resume": resume});
    if let Some(run_bundle) = std::env::var_os("BARE_RUN_BUNDLE") {
        let mut cycle = vec![];
        for i in 0..n {
            let id = format!("hb-bare-run-{}-{i}", std::process::id());
            let r = (|| -> Res<()> {
                let t = Instant::now();
                let mut c = bare_create(root, Path::new(&run_bundle), &id)?;
                c.start().map_err(|e| format!("libcontainer start: {e}"))?;
                let pid = c.pid().ok_or("no pid")?;
                waitpid(pid, None).map_err(|e| format!("waitpid: {e}"))?;
                cycle.push(ms(t));
                Ok(())
            })();
            bare_delete(root, &id);
            r?;
        }
        out["run_true"] = json!(cycle);
    }
    Ok(out)
}

fn driver(rootfs: &Path, state: &Path, init: &Path, parent: &str, n: usize) -> Res<Value> {
    let d = LinuxDriver::new(LinuxDriverConfig {
        state_dir: state.to_path_buf(),
        init_binary: init.to_path_buf(),
        cgroup_parent: parent.to_owned(),
    })
    .map_err(|e| format!("driver: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())?;
    let spec = |name: &str, i: usize, args: &[&str]| -> Res<ContainerSpec> {
        let id = ContainerId::parse(&format!("hb-{name}-{}-{i}", std::process::id()))
            .map_err(|e| e.to_string())?;
        let log = state.join("logs").join(id.as_str()).join("out.log");
        Ok(ContainerSpec::new(
            id,
            rootfs.to_path_buf(),
            args.iter().map(|a| (*a).to_owned()).collect(),
            log,
        ))
    };
    let (mut create, mut start, mut freeze, mut thaw, mut cycle) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut result = Ok(());
    let measured = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Res<()> {
        for i in 0..n {
            let s = spec("drv", i, &["sleep", "100000"])?;
            let r = (|| -> Res<()> {
                let t = Instant::now();
                d.create(&s).map_err(|e| format!("driver create: {e}"))?;
                create.push(ms(t));
                let t = Instant::now();
                d.start(&s.id).map_err(|e| format!("driver start: {e}"))?;
                start.push(ms(t));
                let t = Instant::now();
                d.freeze(&s.id).map_err(|e| format!("driver freeze: {e}"))?;
                freeze.push(ms(t));
                let t = Instant::now();
                d.thaw(&s.id).map_err(|e| format!("driver thaw: {e}"))?;
                thaw.push(ms(t));
                let s2 = spec("drvtrue", i, &["/bin/true"])?;
                let t = Instant::now();
                let r = (|| -> Res<()> {
                    d.create(&s2).map_err(|e| format!("driver create: {e}"))?;
                    d.start(&s2.id).map_err(|e| format!("driver start: {e}"))?;
                    rt.block_on(d.wait_exit(&s2.id))
                        .map_err(|e| format!("driver wait_exit: {e}"))?;
                    Ok(())
                })();
                let elapsed = ms(t);
                let _ = d.delete(&s2.id);
                r?;
                cycle.push(elapsed);
                Ok(())
            })();
            let _ = d.delete(&s.id);
            if r.is_err() {
                result = r;
                break;
            }
        }
        Ok(())
    }));
    // Whatever happened, nothing of ours stays.
    for c in d.list().unwrap_or_default() {
        let _ = d.delete(&c.id);
    }
    let _ = d.cgroups().remove(Path::new(parent));
    match measured {
        Ok(r) => r?,
        Err(p) => std::panic::resume_unwind(p),
    }
    result?;
    Ok(json!({"create": create, "start": start, "freeze": freeze, "thaw": thaw, "run_true": cycle}))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| -> PathBuf { PathBuf::from(args.get(i).cloned().unwrap_or_default()) };
    let n = |i: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(100usize);
    let out = match args.first().map(String::as_str) {
        Some("bare") if args.len() == 4 => bare(&a(1), &a(2), n(3)),
        Some("driver") if args.len() == 6 => driver(&a(1), &a(2), &a(3), &args[4], n(5)),
        _ => Err("usage: hangar-bench-runtime bare BUNDLE ROOT N | \
                  driver ROOTFS STATE INIT CGROUP_PARENT N"
            .into()),
    };
    match out {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("hangar-bench-runtime: {e}");
            std::process::exit(1);
        }
    }
}
