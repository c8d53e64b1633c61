//! A small PostgreSQL cluster of a test's own, on a loopback port, that
//! checks passwords (SCRAM-SHA-256 for every connection): the shared test
//! server trusts every local login, so a test of password handling needs
//! its own. Started with `initdb` and `pg_ctl` from `pg_config --bindir`
//! (else `/usr/lib/postgresql/15/bin`) in a temporary folder; as root (CI)
//! the tools run as the `postgres` user (`initdb` refuses root), which then
//! owns the folder. Stopped (immediately) when dropped.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::Connection as _;

/// The superuser of every cluster (`postgres`).
pub const SUPERUSER: &str = "postgres";

/// A running PostgreSQL cluster with password authentication.
pub struct PgCluster {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    superuser_password: String,
    bin: PathBuf,
    data: PathBuf,
    run_as_postgres: bool,
    dir: tempfile::TempDir,
}

fn bindir() -> PathBuf {
    Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.join("initdb").exists())
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

impl PgCluster {
    /// Creates and starts a cluster on a free loopback port; panics with
    /// the tools' output if that fails.
    pub async fn start() -> Self {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .expect("start the cluster")
    }

    fn start_blocking() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let run_as_postgres = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let superuser_password = format!("su-{}", uuid::Uuid::new_v4().simple());
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &superuser_password).expect("write pwfile");
        if run_as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the cluster folder to postgres");
        }
        let mut cluster = Self {
            port: 0,
            superuser_password,
            bin: bindir(),
            data: dir.path().join("data"),
            run_as_postgres,
            dir,
        };
        let data = cluster.data.clone();
        cluster.tool(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "-A".as_ref(),
                "scram-sha-256".as_ref(),
                format!("--pwfile={}", pwfile.display()).as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        cluster.port = port;
        let log = cluster.dir.path().join("postgres.log");
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            cluster.dir.path().display()
        );
        cluster.tool(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "30".as_ref(),
                "start".as_ref(),
            ],
        );
        cluster
    }

    /// Runs one of the cluster's tools (as `postgres` when root); panics
    /// with its output if it fails.
    fn tool(&self, name: &str, args: &[&std::ffi::OsStr]) -> String {
        let program = self.bin.join(name);
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "{} failed: {text}\nserver log: {}",
            program.display(),
            self.server_log()
        );
        text
    }

    /// What the cluster's server logged so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// The superuser's connect options (password authentication over TCP).
    pub fn superuser_options(&self) -> sqlx::postgres::PgConnectOptions {
        sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(SUPERUSER)
            .password(&self.superuser_password)
            .database("postgres")
    }

    /// Creates login role `user` with `password` and database `database`
    /// owned by it (any characters in all three).
    pub async fn create_login(&self, user: &str, password: &str, database: &str) {
        let mut conn = sqlx::PgConnection::connect_with(&self.superuser_options())
            .await
            .expect("connect to the cluster as its superuser");
        let ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
        for sql in [
            format!(
                "CREATE ROLE {} LOGIN PASSWORD {}",
                ident(user),
                literal(password)
            ),
            format!("CREATE DATABASE {} OWNER {}", ident(database), ident(user)),
        ] {
            sqlx::raw_sql(&sql)
                .execute(&mut conn)
                .await
                .expect("create the login");
        }
        conn.close().await.ok();
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for PgCluster {
    /// Stops the cluster at once (its files go with the folder).
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = cmd
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
