//! The servers under test, each a separate process on 127.0.0.1: `tenantry serve` (the
//! binary next to this one) on a fresh SQLite file or PostgreSQL database, and the
//! baseline (this binary with `--serve-baseline`). Their memory is read from
//! `/proc/<pid>/status`.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use sea_orm::{ConnectionTrait, Database};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// How long a server may take to answer its first health check.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A server process this run started; killed when dropped.
pub struct Process {
    child: Child,
    pid: u32,
    /// Its gRPC port on 127.0.0.1.
    pub port: u16,
}

/// Resident memory of a process in KiB: now and the high-water mark.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// `VmRSS`.
    pub rss_kib: u64,
    /// `VmHWM` (peak resident set since start).
    pub hwm_kib: u64,
}

/// A free port on 127.0.0.1 (released at once: the server binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Refuses database URLs that leave this machine: the load stays on loopback.
pub fn ensure_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    let local = host.is_empty() || host == "localhost" || host == "::1" || host.starts_with("127.");
    if !local {
        bail!("the database must be on this machine (127.0.0.1, localhost or ::1), not {host:?}");
    }
    Ok(())
}

/// A channel to `port` on 127.0.0.1 with `TCP_NODELAY` and a per-call timeout.
pub async fn channel(port: u16) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await?)
}

/// Waits until the health service on `port` answers SERVING.
async fn wait_serving(port: u16, child: &mut Child, log: &Path) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    while started.elapsed() < START_TIMEOUT {
        if let Some(status) = child.try_wait()? {
            bail!("the server exited with {status}; see {}", log.display());
        }
        if let Ok(channel) = channel(port).await {
            let answer = HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await;
            if answer.is_ok_and(|a| a.into_inner().status == 1) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the server did not serve within {START_TIMEOUT:?}; see {}",
        log.display()
    )
}

impl Process {
    /// Starts `tenantry serve` on `database_url`, logging to `log`.
    pub async fn tenantry(
        database_url: &str,
        secret: &str,
        pool: u32,
        log: &Path,
    ) -> anyhow::Result<Process> {
        let (grpc, http) = (free_port()?, free_port()?);
        let mut command = Command::new(sibling("tenantry")?);
        command
            .arg("serve")
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .args(["--database-url", database_url])
            .args(["--db-max-connections", &pool.to_string()])
            .args(["--jwt-secret", secret])
            .args(["--drain-seconds", "0"])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        Self::start(command, grpc, log).await
    }

    /// Starts the baseline server (this binary with `--serve-baseline PORT`).
    pub async fn baseline(log: &Path) -> anyhow::Result<Process> {
        let port = free_port()?;
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["--serve-baseline", &port.to_string()]);
        Self::start(command, port, log).await
    }

    async fn start(mut command: Command, port: u16, log: &Path) -> anyhow::Result<Process> {
        let out = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the server")?;
        let pid = child.id().context("the server has no pid")?;
        wait_serving(port, &mut child, log).await?;
        Ok(Process { child, pid, port })
    }

    /// The process's resident memory now and at its peak.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Memory {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
        })
    }

    /// CPU time the process has used (user + system), in milliseconds.
    pub fn cpu_ms(&self) -> u64 {
        cpu_ms(&format!("/proc/{}/stat", self.pid))
    }

    /// Asks the process to stop (SIGTERM), waiting at most 30 s before killing it.
    pub async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let waited = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        if waited.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// CPU time (user + system) in milliseconds from a `/proc/…/stat` file; 0 when
/// unreadable. Linux counts it in USER_HZ ticks, 100 a second.
pub fn cpu_ms(stat_path: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(stat_path) else {
        return 0;
    };
    // Fields after the parenthesised command name start at field 3 (state); utime and
    // stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick(11) + tick(12)) * 10
}

/// A binary in the same directory as this one (`target/release/tenantry`).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build it first (`cargo build --release --bins`)",
            path.display()
        );
    }
    // `cargo run --bin tenantry-load` relinks only this binary: say so when the server
    // binary may predate the code it is meant to measure.
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(server), Some(load)) = (modified(&path), modified(&me))
        && server < load
    {
        eprintln!(
            "warning: {} is older than {}; `cargo build --release --bins` rebuilds both",
            path.display(),
            me.display()
        );
    }
    Ok(path)
}

/// A fresh PostgreSQL database for one run; dropped by [`FreshDatabase::drop_now`].
pub struct FreshDatabase {
    server: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

impl FreshDatabase {
    /// Creates `tenantry_load_<pid>` on the server at `server`.
    pub async fn create(server: &str) -> anyhow::Result<FreshDatabase> {
        ensure_loopback(server)?;
        let name = format!("tenantry_load_{}", std::process::id());
        let admin = Database::connect(server).await?;
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        let _ = admin.close().await;
        let (base, query) = match server.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (server, String::new()),
        };
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        Ok(FreshDatabase {
            server: server.to_owned(),
            url: format!("{base}/{name}{query}"),
            name,
        })
    }

    /// Drops the database (best effort).
    pub async fn drop_now(self) {
        if let Ok(admin) = Database::connect(&self.server).await {
            let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = admin.execute_unprepared(&statement).await;
            let _ = admin.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ensure_loopback;

    #[test]
    fn only_loopback_databases_are_accepted() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://u:p@localhost/db?sslmode=disable",
            "postgresql://[::1]:5432/x",
            "postgres:///db",
        ] {
            assert!(ensure_loopback(url).is_ok(), "{url}");
        }
        for url in [
            "postgres://db.example.com/x",
            "postgres://u@10.0.0.5:5432/x",
        ] {
            assert!(ensure_loopback(url).is_err(), "{url}");
        }
    }
}
