//! The `hangar` binary, run as a user runs it: exit codes, output, and goldens for help and
//! `config machines`; against a real host (`live`, `deploy`, `machine`): listings as tables
//! and JSON, `launch`, `certs`, deploys, `scale count|vm|memory`, `machine run|update|clone`.
//! `UPDATE_SNAPSHOTS=1` rewrites the goldens for review.

mod deploy;
mod ips;
mod live;
mod logs;
mod machine;
mod wireguard;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hangar(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hangar"))
        .args(args)
        .output()
        .expect("run hangar")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A temp dir removed on drop, unique per test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("hangar-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cli/golden")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden {} missing ({e}); run with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert_eq!(
        expected, actual,
        "golden {name} differs; run with UPDATE_SNAPSHOTS=1 and review"
    );
}

#[test]
fn validate_exit_codes_are_0_valid_1_invalid_2_unreadable() {
    let t = TempDir::new("exit");
    let good = t.write("good.toml", "app = \"ok\"\n");
    let bad = t.write(
        "bad.toml",
        "app = \"ok\"\n[deploy]\nstrategy = \"blue-green\"\n",
    );
    let broken = t.write("broken.toml", "app = \"ok\n");
    assert_eq!(
        hangar(&["config", "validate", "-c", &good]).status.code(),
        Some(0)
    );
    let o = hangar(&["config", "validate", "-c", &bad]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("bad.toml:3:12: error: deploy.strategy: 'blue-green' is not a strategy; use one of rolling, immediate, canary, bluegreen"), "{err}");
    assert!(err.contains("help: set strategy = \"bluegreen\""), "{err}");
    assert_eq!(
        hangar(&["config", "validate", "-c", &broken]).status.code(),
        Some(1)
    );
    let missing = t.0.join("nope.toml").display().to_string();
    let o = hangar(&["config", "validate", "-c", &missing]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("pass -c"), "{}", stderr(&o));
}

#[test]
fn strict_turns_unknown_keys_into_errors_with_suggestions() {
    let t = TempDir::new("strict");
    let f = t.write("fly.toml", "app = \"ok\"\n[[services]]\ninternal_port = 8080\n[[services.ports]]\nport = 80\n[[services.tcp_checks]]\nnterval = \"10s\"\n");
    assert_eq!(
        hangar(&["config", "validate", "-c", &f]).status.code(),
        Some(0)
    );
    let o = hangar(&["config", "validate", "-c", &f, "--strict"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(
            "fly.toml:7:1: error: services[0].tcp_checks[0].nterval: unrecognized key 'nterval'"
        ),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("did you mean 'interval'?"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn validate_json_reports_every_finding_with_its_position() {
    let t = TempDir::new("json");
    let f = t.write(
        "fly.toml",
        "app = \"ok\"\nkill_signal = \"SIGFOO\"\n[[restart]]\npolicy = \"sometimes\"\n",
    );
    let o = hangar(&["config", "validate", "-c", &f, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json output");
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"], 2);
    let findings = v["findings"].as_array().expect("findings");
    assert_eq!(findings[0]["path"], "kill_signal");
    assert_eq!(
        (findings[0]["line"].as_u64(), findings[0]["column"].as_u64()),
        (Some(2), Some(15))
    );
    assert_eq!(findings[1]["path"], "restart[0].policy");
    assert_eq!(findings[1]["severity"], "error");
    // Unreadable files are JSON too, exit 2.
    let o = hangar(&[
        "config",
        "validate",
        "-c",
        "/nonexistent/fly.toml",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json output");
    assert_eq!(v["readable"], false);
}

#[test]
fn a_directory_finds_its_fly_toml_and_app_flag_wins() {
    let example = repo().join("examples/hello");
    let o = hangar(&[
        "config",
        "show",
        "-c",
        &example.display().to_string(),
        "--format",
        "json",
        "-a",
        "renamed",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["app"], "renamed");
}

#[test]
fn show_output_reads_back_as_the_same_config() {
    let corpus = repo().join("../shared/conformance/flytoml/real");
    let t = TempDir::new("show");
    for name in ["005.toml", "011.toml", "025.toml", "070.toml"] {
        let src = corpus.join(name).display().to_string();
        for format in ["toml", "json", "yaml"] {
            let o = hangar(&["config", "show", "-c", &src, "--format", format]);
            assert_eq!(o.status.code(), Some(0), "{name} {format}: {}", stderr(&o));
            let out = t.write(&format!("fly.{format}"), &stdout(&o));
            let again = hangar(&["config", "show", "-c", &out, "--format", "json"]);
            let first = hangar(&["config", "show", "-c", &src, "--format", "json"]);
            assert_eq!(stdout(&again), stdout(&first), "{name} via {format}");
        }
    }
}

#[test]
fn machines_of_the_example_app_match_the_golden() {
    let example = repo().join("examples/hello/fly.toml").display().to_string();
    let o = hangar(&["config", "machines", "-c", &example]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    golden("machines-hello.json", &stdout(&o));
    let o = hangar(&[
        "config", "machines", "-c", &example, "--group", "worker", "--image", "img:2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["image"], "img:2");
    assert_eq!(v["env"]["FLY_PROCESS_GROUP"], "worker");
    let o = hangar(&["config", "machines", "-c", &example, "--group", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no process group named 'nope' (groups: web, worker)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn vm_sizes_list_every_preset_the_api_accepts() {
    // No API is needed: pointed at nothing, it still answers.
    let o = hangar(&["platform", "vm-sizes", "--api-url", "http://127.0.0.1:9"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    golden("platform-vm-sizes.txt", &stdout(&o));
    let o = hangar(&["platform", "vm-sizes", "-j"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let sizes = v.as_array().expect("a list");
    let names: Vec<&str> = sizes.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, hangar_manifest::guest::preset_names());
    let first = &sizes[0];
    assert_eq!(first["name"], "shared-cpu-1x");
    assert_eq!(first["cpu_kind"], "shared");
    assert_eq!(first["cpu_cores"], 1);
    assert_eq!(first["memory_mb"], 256);
    assert_eq!(first["memory_gb"], 0.25);
    let gpu = sizes.iter().find(|s| s["name"] == "l40s").expect("l40s");
    assert_eq!(gpu["gpu_kind"], "l40s");
    assert_eq!(gpu["gpus"], 1);
}

/// The subcommands a help text lists (`Commands:` up to the next blank line; not `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn help_of_every_command_matches_its_golden() {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let o = hangar(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        let name = if path.is_empty() {
            "help.txt".to_string()
        } else {
            format!("help-{}.txt", path.join("-"))
        };
        let text = stdout(&o);
        golden(&name, &text);
        seen.insert(name);
        for sub in subcommands(&text) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
    }
    assert!(seen.len() > 40, "every command has help: {seen:?}");
    // No golden of a command that is gone.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cli/golden");
    for e in std::fs::read_dir(&dir).expect("golden dir") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        if name.starts_with("help") && !seen.contains(&name) {
            if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
                std::fs::remove_file(dir.join(&name)).expect("remove stale golden");
            } else {
                panic!("golden {name} belongs to no command; run with UPDATE_SNAPSHOTS=1");
            }
        }
    }
}

#[test]
fn usage_errors_exit_2_with_a_hint() {
    for (args, hint) in [
        (vec!["deploy", "--strategy"], "a value is required"),
        (
            vec!["launch", "--auto-stop", "sometimes"],
            "[possible values: off, stop, suspend]",
        ),
        (vec!["certs", "add"], "<HOSTNAME>"),
        (vec!["scale", "count"], "<COUNTS>..."),
        (
            vec!["machine", "stopp"],
            "tip: a similar subcommand exists: 'stop'",
        ),
        (
            vec!["volumes", "create", "data", "--size", "big"],
            "invalid digit",
        ),
    ] {
        let o = hangar(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(hint), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("--help"), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn bad_flags_get_a_usage_error() {
    let o = hangar(&["config", "validate", "--strikt"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--strict"),
        "suggests the right flag: {}",
        stderr(&o)
    );
}
