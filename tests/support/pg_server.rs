//! A PostgreSQL server of the test's own (initdb + pg_ctl on a free port, in a temp directory) that
//! speaks only TLS, with a certificate made at test time, and checks passwords (scram-sha-256): what
//! the shared server at 127.0.0.1:5432, which trusts loopback, cannot show. Stopped with the value.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor};
use tempfile::TempDir;

use super::free_port;

/// The superuser's password.
const ADMIN_PASSWORD: &str = "admin-secret";

/// A CA and the PEM of its certificate.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for 127.0.0.1 and localhost, and its key (PEM).
    fn server_pair(&self) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// The running server.
pub struct PgServer {
    dir: TempDir,
    bin: PathBuf,
    pub port: u16,
    pub ca: Ca,
    /// The superuser's pool (over TLS, checked against `ca`).
    pub admin: PgPool,
}

/// The newest `/usr/lib/postgresql/VERSION/bin` holding the server programs.
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn skip_or_fail(test: &str, why: &str) -> Option<PgServer> {
    if std::env::var("HOMEWRIGHT_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!(
            "{test}: a PostgreSQL server of its own is required (HOMEWRIGHT_REQUIRE_POSTGRES=1) but {why}"
        );
    }
    eprintln!("skipping {test}: {why}; install the postgresql package (as .ci/run does) to run it");
    None
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PgServer {
    /// Starts the server; `None` (with the reason printed) when the PostgreSQL server programs are not
    /// installed, unless `HOMEWRIGHT_REQUIRE_POSTGRES=1` makes that a failure.
    pub async fn start(test: &str) -> Option<PgServer> {
        let Some(bin) = server_bin() else {
            return skip_or_fail(test, "no initdb under /usr/lib/postgresql/*/bin");
        };
        let root = is_root();
        if root
            && Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .map_or(true, |o| !o.status.success())
        {
            return skip_or_fail(
                test,
                "running as root and there is no `postgres` user to run the server as",
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path();
        let port = free_port();
        let ca = Ca::new("homewright test PostgreSQL CA");
        let (cert, key) = ca.server_pair();
        std::fs::write(path.join("server.crt"), cert).expect("write the certificate");
        std::fs::write(path.join("server.key"), key).expect("write the key");
        std::fs::write(path.join("ca.pem"), &ca.pem).expect("write the CA");
        std::fs::write(path.join("pw"), ADMIN_PASSWORD).expect("write the password file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path.join("server.key"), std::fs::Permissions::from_mode(0o600))
            .expect("key mode");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("dir mode");
        let server = |program: &str| -> Command {
            let program = bin.join(program);
            let mut command = if root {
                // initdb and the server refuse to run as root.
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                Command::new(program)
            };
            command.current_dir(path);
            command
        };
        if root {
            let chown = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(path)
                .status()
                .expect("run chown");
            assert!(chown.success(), "chown the server's directory to postgres");
        }
        let data = path.join("data");
        let initdb = server("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--pwfile=pw",
                "-E",
                "UTF8",
            ])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir}'\n\
             ssl = on\nssl_cert_file = '{dir}/server.crt'\nssl_key_file = '{dir}/server.key'\n\
             fsync = off\nsynchronous_commit = off\nmax_connections = 20\nshared_buffers = 16MB\n",
            dir = path.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        // TLS and a password, or nothing: a client that does not ask for TLS is turned away.
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("write pg_hba.conf");
        let start = server("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(path.join("server.log"))
            .args(["-w", "-t", "120", "start"])
            .output()
            .expect("run pg_ctl");
        assert!(
            start.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&start.stderr),
            std::fs::read_to_string(path.join("server.log")).unwrap_or_default()
        );
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&format!(
                "postgres://postgres:{ADMIN_PASSWORD}@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={}",
                path.join("ca.pem").display()
            ))
            .await;
        let admin = match admin {
            Ok(admin) => admin,
            Err(e) => {
                stop(&bin, path);
                panic!("connect to the test server as its superuser: {e}");
            }
        };
        let server = PgServer {
            dir,
            bin,
            port,
            ca,
            admin,
        };
        Some(server)
    }

    /// `postgres://USER:PASSWORD@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{database}", self.port)
    }

    /// The CA's file.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// URL parameters for a checked TLS connection.
    pub fn verify_full(&self) -> String {
        format!("sslmode=verify-full&sslrootcert={}", self.ca_path().display())
    }

    /// A role that may log in with `password`, owning a new database of its name.
    pub async fn role_with_database(&self, name: &str, password: &str) {
        self.admin
            .execute(AssertSqlSafe(format!(
                "CREATE ROLE {name} LOGIN PASSWORD '{password}'"
            )))
            .await
            .expect("create the role");
        self.admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name} OWNER {name}")))
            .await
            .expect("create the database");
    }

    /// The superuser on database `name`.
    pub async fn pool_on(&self, name: &str) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&format!(
                "{}?{}",
                self.url("postgres", ADMIN_PASSWORD, name),
                self.verify_full()
            ))
            .await
            .expect("connect to the database")
    }
}

fn append(file: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .expect("open the server config");
    f.write_all(text.as_bytes()).expect("append to the server config");
}

/// Stops the server at `dir` at once (its data is thrown away with the directory).
fn stop(bin: &Path, dir: &Path) {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join("pg_ctl"));
        c
    } else {
        Command::new(bin.join("pg_ctl"))
    };
    let _ = command
        .current_dir(dir)
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-m", "immediate", "-w", "stop"])
        .output();
}

impl Drop for PgServer {
    fn drop(&mut self) {
        stop(&self.bin, self.dir.path());
    }
}
