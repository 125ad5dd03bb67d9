//! `hangar ips` against a real host: a Flycast address allocated, listed (table and JSON
//! against goldens, its random address replaced), refused twice, released; public addresses
//! and bad input refused with what to do.

use hangar_testkit::TestCluster;
use serde_json::Value;

use super::live::{Hangar, aligned};
use super::{golden, stderr, stdout};

/// What changes from run to run (the random addresses, whose length varies too, and the
/// times) replaced by placeholders, and column padding made two spaces (alignment is checked
/// before, [`aligned`]).
fn masked(text: &str, list: &Value) -> String {
    let mut out = text.to_string();
    for (i, a) in list.as_array().into_iter().flatten().enumerate() {
        if let Some(ip) = a["ip"].as_str() {
            out = out.replace(ip, &format!("<ip{}>", i + 1));
        }
        if let Some(t) = a["created_at"].as_str() {
            let zero: String = t
                .chars()
                .map(|c| if c.is_ascii_digit() { '0' } else { c })
                .collect();
            out = out.replace(t, &zero);
        }
    }
    let mut lines = String::new();
    for line in out.lines() {
        let cells: Vec<&str> = line.split("  ").filter(|c| !c.is_empty()).collect();
        let joined = cells
            .iter()
            .map(|c| c.trim())
            .collect::<Vec<_>>()
            .join("  ");
        // JSON keeps its indentation.
        let indent = line.len() - line.trim_start().len();
        lines.push_str(&" ".repeat(indent));
        lines.push_str(&joined);
        lines.push('\n');
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ips_allocate_list_and_release_with_errors_that_say_what_to_do() {
    let cluster = TestCluster::start().await.expect("cluster");
    let h = Hangar::new(cluster.api, "ips");
    h.ok(&["apps", "create", "ipsweb", "-o", "personal"]).await;

    let out = h.ok(&["ips", "list", "-a", "ipsweb"]).await;
    assert!(out.contains("ipsweb has no addresses"), "{out}");
    assert_eq!(
        h.json(&["ips", "list", "-a", "ipsweb", "-j"]).await,
        Value::Array(vec![])
    );

    let out = h
        .ok(&["ips", "allocate-v6", "--private", "-a", "ipsweb"])
        .await;
    assert!(
        out.starts_with("Allocated Flycast address fdaa:")
            && out.contains("ipsweb.flycast")
            && out.contains("network 'default' of org 'personal'"),
        "{out}"
    );
    let list = h.json(&["ips", "list", "-a", "ipsweb", "-j"]).await;
    let ips: Vec<String> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|i| i["ip"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ips.len(), 1, "{list}");
    let json = serde_json::to_string_pretty(&list).expect("json") + "\n";
    golden("ips-list.json", &masked(&json, &list));
    let table = aligned(h.ok(&["ips", "list", "-a", "ipsweb"]).await);
    golden("ips-list.txt", &masked(&table, &list));

    // Refusals: exit 3 (the API said no) with what to do; 2 for wrong usage.
    for (args, code, says) in [
        (
            vec!["ips", "allocate-v6", "--private", "-a", "ipsweb"],
            3,
            "release it first",
        ),
        (
            vec![
                "ips",
                "allocate-v6",
                "--private",
                "--network",
                "nope",
                "-a",
                "ipsweb",
            ],
            3,
            "no network 'nope'",
        ),
        (
            vec!["ips", "allocate-v6", "--private", "-a", "nope"],
            3,
            "not visible with this token",
        ),
        (
            vec!["ips", "allocate-v4", "--shared", "-a", "ipsweb"],
            3,
            "--public-ip",
        ),
        (vec!["ips", "allocate-v4", "-a", "ipsweb"], 3, "--shared"),
        (
            vec!["ips", "allocate-v6", "--org", "x", "-a", "ipsweb"],
            2,
            "add --private",
        ),
        (
            vec!["ips", "release", "fdaa::11", "-a", "ipsweb"],
            3,
            "hangar ips list -a ipsweb",
        ),
        (
            vec!["ips", "release", "nope", "-a", "ipsweb"],
            2,
            "not an IP address",
        ),
        (vec!["ips", "release", "-a", "ipsweb"], 2, "<IP>"),
    ] {
        let o = h.run(&args).await;
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }

    let o = h.run(&["ips", "release", &ips[0], "-a", "ipsweb"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("Released {} from ipsweb\n", ips[0]));
    assert_eq!(
        h.json(&["ips", "list", "-a", "ipsweb", "-j"]).await,
        Value::Array(vec![])
    );
}
