//! `hangar launch`: the fly.toml the reference's `fly launch` writes for a new app, and the
//! facts it reads from a project (the port a Dockerfile `EXPOSE`s).
//!
//! The output has the reference's generated shape: a header comment, `app`,
//! `primary_region`, `[build]`, `[http_service]` (`force_https = true`,
//! `auto_stop_machines = 'stop'`, `auto_start_machines = true`, `min_machines_running = 0`,
//! `processes = ['app']`) and a `[[vm]]` of shared-cpu-1x with 1 GB. Callers validate it with
//! [`crate::parse`] before writing it.

use crate::units;

/// Port apps listen on when nothing says otherwise (§1.8).
pub const DEFAULT_INTERNAL_PORT: u16 = 8080;

/// Everything a generated fly.toml depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    /// App name.
    pub app: String,
    /// `primary_region`.
    pub region: String,
    /// `[build] image` (a registry reference); `None` builds from the Dockerfile.
    pub image: Option<String>,
    /// `[build] dockerfile`, when it is not `Dockerfile` next to fly.toml.
    pub dockerfile: Option<String>,
    /// `[http_service] internal_port`.
    pub internal_port: u16,
    /// `auto_stop_machines`: `off`, `stop` or `suspend`.
    pub auto_stop: String,
    /// `[[vm]] size` (a preset); `None`: `cpu_kind` and `cpus`.
    pub vm_size: Option<String>,
    /// `[[vm]] memory` (e.g. `1gb`, `512mb`; a bare number is MB).
    pub vm_memory: Option<String>,
    /// `[[vm]] cpu_kind` (`shared`, `performance`).
    pub vm_cpu_kind: Option<String>,
    /// `[[vm]] cpus`.
    pub vm_cpus: Option<u32>,
    /// When it was generated, for the header (RFC 3339).
    pub generated_at: String,
}

impl LaunchPlan {
    /// A plan with the reference's defaults for `app` in `region`.
    pub fn new(app: &str, region: &str) -> Self {
        Self {
            app: app.to_string(),
            region: region.to_string(),
            image: None,
            dockerfile: None,
            internal_port: DEFAULT_INTERNAL_PORT,
            auto_stop: "stop".into(),
            vm_size: None,
            vm_memory: None,
            vm_cpu_kind: None,
            vm_cpus: None,
            generated_at: String::new(),
        }
    }

    /// The `[[vm]]` memory written: the given one (a bare number is MB), else 1 GB.
    pub fn memory(&self) -> String {
        match self.vm_memory.as_deref().map(str::trim) {
            Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) => format!("{m}mb"),
            Some(m) if !m.is_empty() => m.to_string(),
            _ => "1gb".into(),
        }
    }

    /// `auto_stop_machines` as written: `suspend` only below 2 GB of memory (the reference's
    /// rule; else `stop`). The second value says when `suspend` became `stop`.
    pub fn effective_auto_stop(&self) -> (String, bool) {
        if self.auto_stop == "suspend"
            && units::memory_mb(&self.memory()).is_ok_and(|mb| mb >= 2048)
        {
            return ("stop".into(), true);
        }
        (self.auto_stop.clone(), false)
    }
}

/// A TOML string: single-quoted like the reference writes, double-quoted and escaped when the
/// value needs it.
fn q(s: &str) -> String {
    if s.chars().any(|c| c == '\'' || c.is_control()) {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
    } else {
        format!("'{s}'")
    }
}

/// The fly.toml text for `plan`.
pub fn generate(plan: &LaunchPlan) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# fly.toml app configuration file generated for {} on {}\n",
        plan.app.replace('\n', " "),
        plan.generated_at.replace('\n', " ")
    ));
    out.push_str(
        "#\n# See https://fly.io/docs/reference/configuration/ for information about how to use this file.\n#\n\n",
    );
    out.push_str(&format!("app = {}\n", q(&plan.app)));
    out.push_str(&format!("primary_region = {}\n\n", q(&plan.region)));
    out.push_str("[build]\n");
    if let Some(i) = &plan.image {
        out.push_str(&format!("  image = {}\n", q(i)));
    }
    if let Some(d) = &plan.dockerfile {
        out.push_str(&format!("  dockerfile = {}\n", q(d)));
    }
    out.push('\n');
    out.push_str("[http_service]\n");
    out.push_str(&format!("  internal_port = {}\n", plan.internal_port));
    out.push_str("  force_https = true\n");
    out.push_str(&format!(
        "  auto_stop_machines = {}\n",
        q(&plan.effective_auto_stop().0)
    ));
    out.push_str("  auto_start_machines = true\n");
    out.push_str("  min_machines_running = 0\n");
    out.push_str("  processes = ['app']\n\n");
    out.push_str("[[vm]]\n");
    if let Some(size) = &plan.vm_size {
        out.push_str(&format!("  size = {}\n", q(size)));
        if plan.vm_memory.is_some() {
            out.push_str(&format!("  memory = {}\n", q(&plan.memory())));
        }
    } else {
        out.push_str(&format!("  memory = {}\n", q(&plan.memory())));
        out.push_str(&format!(
            "  cpu_kind = {}\n",
            q(plan.vm_cpu_kind.as_deref().unwrap_or("shared"))
        ));
        out.push_str(&format!("  cpus = {}\n", plan.vm_cpus.unwrap_or(1)));
    }
    out
}

/// The port a Dockerfile exposes: the first port of the last `EXPOSE` of its final stage
/// (ports given as build arguments, like `$PORT`, are skipped).
pub fn dockerfile_port(dockerfile: &str) -> Option<u16> {
    // Instructions: continuation lines joined, comments dropped.
    let mut instructions = Vec::new();
    let mut cur = String::new();
    for line in dockerfile.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.starts_with('#') || t.is_empty()) {
            continue;
        }
        if let Some(rest) = t.strip_suffix('\\') {
            cur.push_str(rest);
            cur.push(' ');
        } else {
            cur.push_str(t);
            instructions.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        instructions.push(cur);
    }
    let mut port = None;
    for ins in instructions {
        let mut words = ins.split_whitespace();
        let Some(op) = words.next() else { continue };
        if op.eq_ignore_ascii_case("FROM") {
            port = None;
        } else if op.eq_ignore_ascii_case("EXPOSE") {
            let first = words.find_map(|w| {
                w.split('/')
                    .next()
                    .and_then(|p| p.parse::<u16>().ok())
                    .filter(|p| *p > 0)
            });
            if first.is_some() {
                port = first;
            }
        }
    }
    port
}

/// An app name from a directory or image name: lowercase letters, digits and dashes.
pub fn app_name_from(s: &str) -> Option<String> {
    // An image reference: its last path component without tag or digest.
    let base = s
        .rsplit('/')
        .next()
        .unwrap_or(s)
        .split(['@', ':'])
        .next()
        .unwrap_or_default();
    let mut out = String::new();
    for c in base.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').chars().take(63).collect::<String>();
    let out = out.trim_end_matches('-').to_string();
    (!out.is_empty() && out.starts_with(|c: char| c.is_ascii_lowercase())).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, Severity, ValidateOptions};

    fn valid(text: &str) -> crate::Manifest {
        let m = crate::parse(text, Format::Toml, "fly.toml").expect("parses");
        let r = m.validate(ValidateOptions::default());
        let errors: Vec<String> = r
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}\n{text}");
        m
    }

    #[test]
    fn the_default_plan_has_the_reference_shape_and_validates() {
        let mut p = LaunchPlan::new("my-app", "ams");
        p.image = Some("nginx:1.27".into());
        p.generated_at = "2025-01-02T03:04:05Z".into();
        let text = generate(&p);
        assert_eq!(
            text,
            "# fly.toml app configuration file generated for my-app on 2025-01-02T03:04:05Z
#
# See https://fly.io/docs/reference/configuration/ for information about how to use this file.
#

app = 'my-app'
primary_region = 'ams'

[build]
  image = 'nginx:1.27'

[http_service]
  internal_port = 8080
  force_https = true
  auto_stop_machines = 'stop'
  auto_start_machines = true
  min_machines_running = 0
  processes = ['app']

[[vm]]
  memory = '1gb'
  cpu_kind = 'shared'
  cpus = 1
"
        );
        let m = valid(&text);
        let http = m.config.http_service.as_ref().expect("http_service");
        assert_eq!(http.internal_port, Some(8080));
        assert_eq!(http.force_https, Some(true));
        assert_eq!(m.config.primary_region.as_deref(), Some("ams"));
    }

    #[test]
    fn vm_flags_auto_stop_and_odd_strings_still_validate() {
        let mut p = LaunchPlan::new("x", "local");
        p.dockerfile = Some("docker/It's.Dockerfile".into());
        p.vm_size = Some("shared-cpu-2x".into());
        p.vm_memory = Some("512".into());
        p.auto_stop = "suspend".into();
        p.internal_port = 3000;
        let text = generate(&p);
        assert!(
            text.contains("  size = 'shared-cpu-2x'\n  memory = '512mb'\n"),
            "{text}"
        );
        assert!(text.contains("auto_stop_machines = 'suspend'"), "{text}");
        assert!(
            text.contains("dockerfile = \"docker/It's.Dockerfile\""),
            "{text}"
        );
        let m = valid(&text);
        assert_eq!(
            m.config.build.and_then(|b| b.dockerfile).as_deref(),
            Some("docker/It's.Dockerfile")
        );
        // suspend needs less than 2 GB.
        p.vm_memory = Some("4gb".into());
        assert_eq!(p.effective_auto_stop(), ("stop".to_string(), true));
        assert!(generate(&p).contains("auto_stop_machines = 'stop'"));
        p.auto_stop = "off".into();
        valid(&generate(&p));
    }

    #[test]
    fn exposed_ports_come_from_the_final_stage() {
        assert_eq!(dockerfile_port("FROM alpine\nEXPOSE 3000\n"), Some(3000));
        assert_eq!(dockerfile_port("from a\nexpose 80/tcp 443/tcp\n"), Some(80));
        assert_eq!(
            dockerfile_port("FROM a AS build\nEXPOSE 9999\nFROM b\nCMD x\n"),
            None
        );
        assert_eq!(
            dockerfile_port("FROM a\nEXPOSE 1\n# EXPOSE 7\nEXPOSE \\\n  $PORT 4000\n"),
            Some(4000)
        );
        assert_eq!(dockerfile_port("FROM a\nEXPOSE $PORT\n"), None);
        assert_eq!(dockerfile_port(""), None);
        assert_eq!(dockerfile_port("EXPOSE 70000\nEXPOSE 0"), None);
    }

    #[test]
    fn app_names_from_directories_and_images() {
        assert_eq!(app_name_from("My_Project").as_deref(), Some("my-project"));
        assert_eq!(
            app_name_from("registry.example.com:5000/team/web-api:1.2").as_deref(),
            Some("web-api")
        );
        assert_eq!(app_name_from("nginx@sha256:abc").as_deref(), Some("nginx"));
        assert_eq!(app_name_from("--"), None);
        assert_eq!(app_name_from("123"), None);
        assert_eq!(app_name_from(""), None);
    }
}
