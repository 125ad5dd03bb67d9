//! exec and ps against real containers.

use std::time::Duration;

use hangar_runtime::{ContainerState, Driver, Error, ExecCommand};

use crate::{host, rt, run, wait_log};

fn cmd(argv: &[&str]) -> ExecCommand {
    ExecCommand {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        stdin: None,
        timeout: Duration::from_secs(10),
        max_output: 1 << 20,
    }
}

#[test]
fn exec_runs_inside_the_machine_with_its_env_and_limits() {
    let h = host();
    let mut spec = h.spec("exec", &["sh", "-c", "echo ready; exec sleep 1000"]);
    spec.env.push(("GREETING".into(), "hello-from-env".into()));
    spec.hostname = "exec-box".into();
    run(&h, &spec);
    wait_log(&h, &spec, "ready");
    let rt = rt();

    // Its own namespaces: hostname, pid namespace (init is PID 1), env, cwd.
    let out = rt
        .block_on(h.driver.exec(
            &spec.id,
            cmd(&[
                "sh",
                "-c",
                "hostname; echo $GREETING; cat /proc/1/cmdline | tr '\\0' ' '; echo; echo err >&2; exit 7",
            ]),
        ))
        .expect("exec");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.code, 7, "{out:?}");
    assert!(stdout.contains("exec-box"), "{stdout}");
    assert!(stdout.contains("hello-from-env"), "{stdout}");
    assert!(stdout.contains("/.hangar/init"), "{stdout}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert!(!out.timed_out && !out.truncated);

    // stdin is fed, output is capped.
    let mut c = cmd(&["cat"]);
    c.stdin = Some(b"piped input".to_vec());
    let out = rt.block_on(h.driver.exec(&spec.id, c)).expect("exec cat");
    assert_eq!(out.stdout, b"piped input");
    let mut c = cmd(&["sh", "-c", "yes | head -c 100000"]);
    c.max_output = 1000;
    let out = rt.block_on(h.driver.exec(&spec.id, c)).expect("exec yes");
    assert_eq!((out.stdout.len(), out.truncated), (1000, true));

    // A command past its timeout is killed.
    let mut c = cmd(&["sleep", "100"]);
    c.timeout = Duration::from_millis(300);
    let out = rt.block_on(h.driver.exec(&spec.id, c)).expect("exec sleep");
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.signal, Some(9));

    // A background process holding the pipes does not hold the call.
    let started = std::time::Instant::now();
    let out = rt
        .block_on(
            h.driver
                .exec(&spec.id, cmd(&["sh", "-c", "sleep 3600 & echo bg"])),
        )
        .expect("exec bg");
    assert_eq!(out.code, 0);
    // Not an hour: the call returned when the command did, not when its child will.
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );

    // ps sees the app, the exec'd background sleep, and init; each with its command.
    let procs = h.driver.processes(&spec.id).expect("ps");
    let commands: Vec<&str> = procs.iter().map(|p| p.command.as_str()).collect();
    assert!(
        commands.iter().any(|c| c.starts_with("/.hangar/init")),
        "{commands:?}"
    );
    assert!(commands.contains(&"sleep 1000"), "{commands:?}");
    assert!(procs.iter().all(|p| p.start_ms > 0), "{procs:?}");
    let app = procs
        .iter()
        .find(|p| p.command == "sleep 1000")
        .expect("app");
    assert!(app.rss > 0 && app.run_ms < 600_000, "{app:?}");
    assert!(procs.iter().all(|p| p.directory == "/"), "{procs:?}");

    // A missing program is the command's failure, not the driver's: 127 at once, as a shell
    // says it, for a path and for a name looked up in PATH (well before the deadline).
    for prog in ["/no/such/program", "no-such-program"] {
        let mut c = cmd(&[prog]);
        c.timeout = Duration::from_secs(120);
        let started = std::time::Instant::now();
        let out = rt
            .block_on(h.driver.exec(&spec.id, c))
            .expect("exec of a missing program");
        assert_eq!(out.code, 127, "{prog}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not found"),
            "{prog}: {out:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{prog} waited for the deadline"
        );
    }
    // Names found in PATH (a busybox symlink, resolved inside the machine) still run.
    let out = rt
        .block_on(h.driver.exec(&spec.id, cmd(&["true"])))
        .expect("exec true");
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn ps_reports_listening_sockets_and_exec_needs_a_running_machine() {
    let h = host();
    let spec = h.spec("psnet", &["sh", "-c", "echo ready; exec nc -l -p 8123"]);
    h.driver.create(&spec).expect("create");
    let rt = rt();
    let err = rt
        .block_on(h.driver.exec(&spec.id, cmd(&["true"])))
        .expect_err("exec before start");
    assert!(matches!(err, Error::WrongState { .. }), "{err}");
    h.driver.start(&spec.id).expect("start");
    wait_log(&h, &spec, "ready");
    crate::wait_until(10, "nc listening", || {
        h.driver.processes(&spec.id).expect("ps").iter().any(|p| {
            p.listen
                .iter()
                .any(|(proto, a)| proto == "tcp" && a.ends_with(":8123"))
        })
    });
    h.driver
        .signal(&spec.id, hangar_runtime::Signal::KILL)
        .expect("kill");
    rt.block_on(h.driver.wait_exit(&spec.id)).expect("exit");
    assert_eq!(
        h.driver.state(&spec.id).expect("state"),
        ContainerState::Stopped
    );
    assert!(h.driver.processes(&spec.id).is_err());
    let _ = run;
}
