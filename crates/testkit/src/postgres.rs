//! A real PostgreSQL server (Debian's `postgresql` package, installed by `scripts/test.sh`)
//! for end-to-end tests, run as the `postgres` user inside a network namespace the test
//! made (a machine's), so that the path to it is a machine's.
//!
//! [`Postgres::start`] makes a cluster in a temp dir (`initdb`, trust authentication from
//! anywhere: the namespace is the test's), runs
//! the postmaster with `ip netns exec … setpriv …` (both exec, so the child is the
//! postmaster itself) and waits until `postmaster.pid` says it is ready. Dropping it asks
//! for a fast shutdown (SIGINT), kills it after 10 s, and removes the cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hangar_image::testing::TempDir;

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    /// The directory of its programs (`psql`, `pg_isready`…).
    pub bin: PathBuf,
    /// Its Unix socket directory (for `psql -h`, as the test's own path to it).
    pub socket_dir: PathBuf,
    /// Its TCP port inside the namespace.
    pub port: u16,
    child: Child,
    dir: TempDir,
}

/// The newest installed server's program directory.
pub fn bin_dir() -> Result<PathBuf, String> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|e| format!("{}: {e} (install postgresql)", root.display()))?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| "no PostgreSQL server under /usr/lib/postgresql".into())
}

/// The uid and gid of user `name`, from `/etc/passwd`.
fn user(name: &str) -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        })
        .flatten()
        .ok_or_else(|| format!("no user {name} (the postgresql package makes it)"))
}

/// `setpriv` arguments running a program as `postgres`.
const AS_POSTGRES: [&str; 4] = [
    "setpriv",
    "--reuid=postgres",
    "--regid=postgres",
    "--init-groups",
];

impl Postgres {
    /// Starts a server listening on every address of network namespace `netns` (a name under
    /// `/run/netns`) at `port`.
    pub fn start(netns: &str, port: u16) -> Result<Self, String> {
        let bin = bin_dir()?;
        let (uid, gid) = user("postgres")?;
        let dir = TempDir::new("pg").map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let initdb_log = dir.path().join("initdb.log");
        let mut initdb = Command::new(AS_POSTGRES[0])
            .args(&AS_POSTGRES[1..])
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&initdb_log).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("initdb: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = initdb.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = initdb.kill();
                let _ = initdb.wait();
                return Err("initdb took over 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            return Err(format!(
                "initdb: {}",
                std::fs::read_to_string(&initdb_log)
                    .unwrap_or_default()
                    .trim()
            ));
        }
        // Clients come from the host's side of the machine's bridge (the proxy), not loopback.
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
        rules.push_str("host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n");
        std::fs::write(&hba, rules).map_err(|e| e.to_string())?;
        let socket_dir = dir.path().to_path_buf();
        let log =
            std::fs::File::create(dir.path().join("server.log")).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .args(AS_POSTGRES)
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=*", "-c"])
            .arg(format!("port={port}"))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", socket_dir.display()))
            .args(["-c", "fsync=off", "-c", "max_connections=20"])
            .args(["-c", "shared_buffers=16MB"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        let mut pg = Self {
            bin,
            socket_dir,
            port,
            child,
            dir,
        };
        pg.until_ready(&data)?;
        Ok(pg)
    }

    fn until_ready(&mut self, data: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The postmaster writes its status as the pid file's last line; `ready` once it
            // accepts connections.
            let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
            if pid_file.lines().any(|l| l.trim() == "ready") {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("postgres exited ({status}): {}", self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("postgres not ready in 30 s: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A `psql` command run by the test (as root, so through the socket as user `postgres`
    /// with `-U`, or to any address by a connection string).
    pub fn psql(&self) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGHOST")
            .env_remove("PGPORT");
        c
    }

    /// Runs `sql` through the server's own socket and returns its output, trimmed.
    pub fn query_local(&self, sql: &str) -> Result<String, String> {
        let out = self
            .psql()
            .arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SIGINT: PostgreSQL's fast shutdown.
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
