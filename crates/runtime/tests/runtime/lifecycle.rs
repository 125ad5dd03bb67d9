//! Create, start, signals, stop, freeze/thaw, reaping, logs, delete.

use std::fs;
use std::path::Path;
use std::time::Duration;

use hangar_runtime::{ContainerState, Driver, Signal};

use crate::{host, mounts_under, rt, run, wait_log, wait_until};

#[test]
fn init_is_pid1_in_new_namespaces_and_output_is_logged() {
    let h = host();
    let spec = h.spec("pid1", &["sh", "-c", "echo hello; echo pid=$$; sleep 1000"]);
    h.driver.create(&spec).expect("create");
    assert_eq!(
        h.driver.state(&spec.id).expect("state"),
        ContainerState::Created
    );
    let started = h.driver.start(&spec.id).expect("start");
    assert_eq!(
        h.driver.state(&spec.id).expect("state"),
        ContainerState::Running
    );
    wait_log(&h, &spec, "hello");

    // The host pid is hangar-init, PID 1 in its own pid namespace; the app is PID 2.
    let cmdline = fs::read(format!("/proc/{}/cmdline", started.pid)).expect("cmdline");
    assert!(cmdline.starts_with(b"/.hangar/init\0"), "{cmdline:?}");
    let status = fs::read_to_string(format!("/proc/{}/status", started.pid)).expect("status");
    let nspid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .expect("NSpid");
    assert!(nspid.trim_end().ends_with("\t1"), "{nspid}");
    wait_log(&h, &spec, "pid=2");
    for ns in ["pid", "net", "mnt", "uts", "ipc", "cgroup"] {
        let mine = fs::read_link(format!("/proc/self/ns/{ns}")).expect("own ns");
        let theirs = fs::read_link(format!("/proc/{}/ns/{ns}", started.pid)).expect("ns");
        assert_ne!(mine, theirs, "{ns} namespace is shared with the host");
    }
    // Its mounts are its own: nothing shows up in the host's mount table.
    assert!(
        mounts_under(h.dir()).is_empty(),
        "{:?}",
        mounts_under(h.dir())
    );

    let listed = h.driver.list().expect("list");
    let me = listed.iter().find(|c| c.id == spec.id).expect("listed");
    assert_eq!(me.pid, Some(started.pid));
    assert_eq!(me.spec.as_ref(), Some(&spec));
}

#[test]
fn sigint_is_forwarded_to_the_app_and_its_exit_code_recorded() {
    let h = host();
    let spec = h.spec(
        "sigint",
        &[
            "sh",
            "-c",
            "trap 'echo trapped; exit 3' INT; echo ready; sleep 1000 & wait",
        ],
    );
    run(&h, &spec);
    wait_log(&h, &spec, "ready");
    h.driver.signal(&spec.id, Signal::INT).expect("signal");
    let status = rt()
        .block_on(h.driver.wait_exit(&spec.id))
        .expect("wait_exit");
    assert_eq!(
        (status.code, status.signal, status.oom_killed),
        (3, None, false)
    );
    assert!(h.log(&spec).contains("trapped"));
    assert_eq!(
        h.driver.state(&spec.id).expect("state"),
        ContainerState::Stopped
    );
    // Asking again gives the same answer (it is recorded).
    let again = rt().block_on(h.driver.wait_exit(&spec.id)).expect("again");
    assert_eq!(again, status);
    assert!(h.driver.signal(&spec.id, Signal::TERM).is_err());
}

#[test]
fn stop_escalates_to_sigkill_after_the_timeout() {
    let h = host();
    let spec = h.spec(
        "stopkill",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while true; do sleep 1; done",
        ],
    );
    run(&h, &spec);
    wait_log(&h, &spec, "ready");
    let t = std::time::Instant::now();
    let status = rt()
        .block_on(
            h.driver
                .stop(&spec.id, Signal::TERM, Duration::from_millis(300)),
        )
        .expect("stop");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!((status.code, status.signal), (137, Some(9)));
}

#[test]
fn stop_with_a_handled_signal_exits_cleanly() {
    let h = host();
    let spec = h.spec("stopterm", &["sh", "-c", "echo ready; sleep 1000"]);
    run(&h, &spec);
    wait_log(&h, &spec, "ready");
    let status = rt()
        .block_on(
            h.driver
                .stop(&spec.id, Signal::TERM, Duration::from_secs(5)),
        )
        .expect("stop");
    // sh dies of the forwarded SIGTERM; init reports it as the app's signal.
    assert_eq!((status.code, status.signal), (143, Some(15)));
}

#[test]
fn freeze_stops_the_clock_and_thaw_resumes_it() {
    let h = host();
    let spec = h.spec(
        "freeze",
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; usleep 20000; done",
        ],
    );
    run(&h, &spec);
    let count_file = h.rootfs().join("tmp/count");
    let count = || -> u64 {
        fs::read_to_string(&count_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    wait_until(10, "the counter", || count() > 2);
    h.driver.freeze(&spec.id).expect("freeze");
    assert_eq!(
        h.driver.state(&spec.id).expect("state"),
        ContainerState::Frozen
    );
    let frozen_at = count();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(), frozen_at, "the counter advanced while frozen");
    assert!(h.driver.start(&spec.id).is_err());
    h.driver.thaw(&spec.id).expect("thaw");
    assert_eq!(
        h.driver.state(&spec.id).expect("state"),
        ContainerState::Running
    );
    wait_until(10, "the counter to move again", || count() > frozen_at + 2);
    // Freezing again and stopping a frozen container works (stop thaws it).
    h.driver.freeze(&spec.id).expect("freeze again");
    let status = rt()
        .block_on(
            h.driver
                .stop(&spec.id, Signal::TERM, Duration::from_secs(5)),
        )
        .expect("stop");
    assert_eq!(status.signal, Some(15));
}

#[test]
fn a_resume_thaws_only_a_frozen_container_and_the_v1_freezer_stays_on() {
    let h = host();
    let spec = h.spec("resume", &["sleep", "1000"]);
    run(&h, &spec);
    // Running: nothing to thaw.
    assert!(!h.driver.thaw_if_frozen(&spec.id).expect("thaw_if_frozen"));
    h.driver.freeze(&spec.id).expect("freeze");
    // On v1, the first freeze leaves an empty cgroup frozen beside the containers for
    // good: thawing the last frozen cgroup would otherwise switch the kernel's freezer off
    // (kernel text patched on every CPU) on each resume.
    let cgroups = h.driver.cgroups();
    let pin = Path::new(&h.config().cgroup_parent).join("_freezer-pin");
    if cgroups.version() == hangar_runtime::cgroup::CgroupVersion::V1 {
        assert!(
            cgroups.is_frozen(&pin).expect("the pin's state"),
            "pin not frozen"
        );
    }
    assert!(h.driver.thaw_if_frozen(&spec.id).expect("thaw_if_frozen"));
    assert_eq!(
        h.driver.state(&spec.id).expect("state"),
        ContainerState::Running
    );
    if cgroups.version() == hangar_runtime::cgroup::CgroupVersion::V1 {
        assert!(
            cgroups.is_frozen(&pin).expect("the pin's state"),
            "pin thawed"
        );
    }
    assert!(
        !h.driver
            .thaw_if_frozen(&spec.id)
            .expect("thaw_if_frozen again")
    );
    // The pin goes with the parent cgroup when the harness removes it.
}

#[test]
fn orphans_are_reaped_by_init() {
    let h = host();
    let spec = h.spec(
        "reap",
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do (sleep 0.1 &) ; done; sleep 1; echo spawned; sleep 1000",
        ],
    );
    let started = run(&h, &spec);
    wait_log(&h, &spec, "spawned");
    std::thread::sleep(Duration::from_millis(100));
    // The five orphans were reparented to init and have exited: none may be a zombie.
    let children_of_init: Vec<(i32, String)> = fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = stat.rsplit_once(") ")?.1.to_owned();
            let ppid: i32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == started.pid).then_some((pid, rest[..1].to_owned()))
        })
        .collect();
    assert!(!children_of_init.is_empty());
    assert!(
        children_of_init.iter().all(|(_, state)| state != "Z"),
        "zombies: {children_of_init:?}"
    );
    // init and the app's last `sleep` (the shell execs it).
    assert_eq!(h.driver.stats(&spec.id).expect("stats").pids, 2);
}

#[test]
fn delete_leaves_nothing_behind_and_is_idempotent() {
    let h = host();
    let spec = h.spec("delete", &["sh", "-c", "echo up; sleep 1000"]);
    let started = run(&h, &spec);
    wait_log(&h, &spec, "up");
    let rel = h.driver.cgroup_path(&spec.id);
    let memory_dir = h.driver.cgroups().dir("memory", &rel).expect("memory dir");
    assert!(memory_dir.is_dir());
    h.driver.delete(&spec.id).expect("delete");
    assert!(
        !memory_dir.exists(),
        "cgroup left: {}",
        memory_dir.display()
    );
    for ctrl in [
        "cpu", "cpuacct", "pids", "freezer", "devices", "cpuset", "blkio",
    ] {
        if let Some(d) = h.driver.cgroups().dir(ctrl, &rel) {
            assert!(!d.exists(), "cgroup left: {}", d.display());
        }
    }
    assert!(!h.driver.layout().container(&spec.id).exists());
    assert!(!h.driver.layout().libcontainer_dir(&spec.id).exists());
    assert!(
        !Path::new(&format!("/proc/{}", started.pid))
            .join("ns")
            .exists()
    );
    assert!(mounts_under(h.dir()).is_empty());
    assert!(h.driver.list().expect("list").is_empty());
    h.driver.delete(&spec.id).expect("second delete");
    assert!(h.driver.state(&spec.id).is_err());
}

#[test]
fn half_made_containers_are_listed_and_deleted() {
    let h = host();
    // A crash right after the first write of create: only spec.json exists.
    let spec = h.spec("half", &["true"]);
    let dir = h.driver.layout().container(&spec.id);
    fs::create_dir_all(&dir).expect("dir");
    fs::write(dir.join("spec.json"), b"{ torn").expect("spec");
    // And a container whose libcontainer state exists alone.
    let other = h.spec("half2", &["true"]);
    fs::create_dir_all(h.driver.layout().libcontainer_dir(&other.id)).expect("lc dir");
    let list = h.driver.list().expect("list");
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        list.iter()
            .all(|c| c.state == ContainerState::Stopped && c.spec.is_none())
    );
    for c in list {
        h.driver.delete(&c.id).expect("delete");
    }
    assert!(h.driver.list().expect("list").is_empty());
}

#[test]
fn a_missing_program_exits_127_with_a_message() {
    let h = host();
    let spec = h.spec("enoent", &["/no/such/program"]);
    run(&h, &spec);
    let status = rt().block_on(h.driver.wait_exit(&spec.id)).expect("wait");
    assert_eq!((status.code, status.signal), (127, None));
    assert!(
        h.log(&spec).contains("cannot run /no/such/program"),
        "{}",
        h.log(&spec)
    );
}

#[test]
fn env_cwd_hostname_and_user_are_applied() {
    let h = host();
    let mut spec = h.spec(
        "env",
        &[
            "sh",
            "-c",
            "echo foo=$FOO; echo cwd=$(pwd); echo host=$(hostname); echo id=$(id -u):$(id -g)",
        ],
    );
    spec.env.push(("FOO".into(), "bar baz".into()));
    spec.cwd = "/tmp".into();
    spec.hostname = "machine-1".into();
    spec.uid = 1000;
    spec.gid = 1001;
    run(&h, &spec);
    let status = rt().block_on(h.driver.wait_exit(&spec.id)).expect("wait");
    assert_eq!(status.code, 0, "{}", h.log(&spec));
    let log = h.log(&spec);
    for want in ["foo=bar baz", "cwd=/tmp", "host=machine-1", "id=1000:1001"] {
        assert!(log.contains(want), "{want:?} not in {log:?}");
    }
}

#[test]
fn logs_are_rotated_at_the_limit() {
    let h = host();
    let mut spec = h.spec(
        "rotate",
        &["sh", "-c", "i=0; while [ $i -lt 400 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; echo err >&2"],
    );
    spec.log_limit_bytes = 4096;
    spec.stderr_log = spec.stdout_log.with_file_name("err.log");
    run(&h, &spec);
    let status = rt().block_on(h.driver.wait_exit(&spec.id)).expect("wait");
    assert_eq!(status.code, 0);
    let out = fs::read_to_string(&spec.stdout_log).expect("out");
    let mut rotated = spec.stdout_log.clone().into_os_string();
    rotated.push(".1");
    let old = fs::read_to_string(&rotated).expect("rotated");
    assert!(
        out.len() <= 4096 && old.len() <= 4096,
        "{} {}",
        out.len(),
        old.len()
    );
    assert!(
        out.trim_end()
            .ends_with("line-399-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
    );
    let err = fs::read_to_string(&spec.stderr_log).expect("err");
    let rec = hangar_runtime::init::logger::parse_record(err.trim_end_matches('\n').as_bytes());
    assert_eq!(
        (rec.stream, rec.full, rec.text),
        (
            hangar_runtime::init::logger::LogStream::Stderr,
            true,
            &b"err"[..]
        ),
        "{err:?}"
    );
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn bind_mounts_are_visible_and_read_only_when_asked() {
    let h = host();
    let hosts = h.dir().join("hosts");
    fs::write(&hosts, "127.0.0.1 localhost\nfdaa::3 fly-local-6pn\n").expect("hosts");
    let vol = h.dir().join("vol");
    fs::create_dir_all(&vol).expect("vol");
    let mut spec = h.spec(
        "mounts",
        &["sh", "-c", "cat /etc/hosts; echo data > /data/file && echo wrote; echo x >> /etc/hosts || echo ro-ok"],
    );
    spec.mounts.push(hangar_runtime::BindMount {
        source: hosts,
        destination: "/etc/hosts".into(),
        read_only: true,
    });
    spec.mounts.push(hangar_runtime::BindMount {
        source: vol.clone(),
        destination: "/data".into(),
        read_only: false,
    });
    run(&h, &spec);
    rt().block_on(h.driver.wait_exit(&spec.id)).expect("wait");
    let log = h.log(&spec);
    for want in ["fly-local-6pn", "wrote", "ro-ok"] {
        assert!(log.contains(want), "{want:?} not in {log:?}");
    }
    assert_eq!(
        fs::read_to_string(vol.join("file")).expect("file"),
        "data\n"
    );
}

#[test]
fn create_refuses_bad_input_and_leaves_nothing() {
    let h = host();
    let mut spec = h.spec("bad", &["true"]);
    spec.rootfs = h.dir().join("nope");
    assert!(h.driver.create(&spec).is_err());
    let mut spec = h.spec("bad", &["true"]);
    spec.netns = Some("/run/netns/hangar-no-such-netns".into());
    assert!(h.driver.create(&spec).is_err());
    assert!(h.driver.list().expect("list").is_empty());
    let spec = h.spec("dup", &["sleep", "100"]);
    h.driver.create(&spec).expect("create");
    assert!(matches!(
        h.driver.create(&spec),
        Err(hangar_runtime::Error::AlreadyExists(_))
    ));
}

#[test]
fn a_signal_sent_right_after_start_is_not_lost() {
    let h = host();
    let rt = rt();
    for i in 0..10 {
        let spec = h.spec(&format!("early{i}"), &["sleep", "1000"]);
        run(&h, &spec);
        // At once: hangar-init may still be installing its handlers.
        h.driver.signal(&spec.id, Signal::INT).expect("signal");
        let status = rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(5), h.driver.wait_exit(&spec.id)).await
            })
            .unwrap_or_else(|_| panic!("run {i}: the early SIGINT was lost"))
            .expect("wait_exit");
        assert_eq!(status.signal, Some(2), "run {i}: {status:?}");
    }
}

#[test]
fn close_waits_for_a_create_under_way_then_refuses_creates_and_starts() {
    let h = host();
    let spec = h.spec("closing", &["sleep", "1000"]);
    let dir = h.driver.layout().container(&spec.id);
    std::thread::scope(|s| {
        let creating = s.spawn(|| h.driver.create(&spec));
        // The create is under way once its directory exists (it is made first).
        wait_until(30, "the create to begin", || dir.is_dir());
        assert!(h.driver.close(Duration::from_secs(30)), "a create is left");
        // The close returned after the create finished: a whole container, never a half one.
        assert_eq!(
            h.driver.state(&spec.id).expect("state"),
            ContainerState::Created
        );
        creating.join().expect("create thread").expect("create");
    });
    let other = h.spec("closed", &["sleep", "1000"]);
    let refused = h.driver.create(&other).expect_err("create after close");
    assert!(refused.to_string().contains("closed"), "{refused}");
    assert!(!h.driver.layout().container(&other.id).exists());
    let refused = h.driver.start(&spec.id).expect_err("start after close");
    assert!(refused.to_string().contains("closed"), "{refused}");
    // What is there can still be removed.
    h.driver.delete(&spec.id).expect("delete after close");
    assert!(h.driver.state(&spec.id).is_err());
}
