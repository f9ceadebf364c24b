//! A PostgreSQL cluster for the tests that keep the store in it: one per test process, started
//! on first use in a temporary folder, with what production has — TLS (a CA and a server
//! certificate made by openssl, verified by the gateway), SCRAM passwords, a migration role that
//! owns the schema and an application role that only reads and writes rows — and each test in a
//! database of its own, migrated as `rxgate store migrate` does. Durability is not what these
//! tests are about, so the cluster runs with `fsync = off`.
//!
//! PostgreSQL refuses to run as root: when the tests do, the cluster's files belong to the
//! `postgres` user and its programs are started with `runuser`. The server is stopped, and its
//! folder removed, when the test process ends (a shell waiting on the end of a pipe from it).
//! A test may make clusters of its own beside the shared one (the failover drill's primary and
//! its streaming standby, `Cluster::own` and `Cluster::standby`), stopped when dropped.
//!
//! `RXGATE_TEST_STORE=postgres` runs the in-process harness's gateways on it
//! ([`super::start_with`]); the PostgreSQL binaries are looked for in `RXGATE_PG_BIN`, then in
//! Debian's `/usr/lib/postgresql/15/bin`; `RXGATE_PG_LOG` names a file to keep the server's log
//! in (`.ci/run` searches it for patient identifiers).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

use rxgate::store::PostgresConfig;

/// Whether the harness's gateways keep their store in PostgreSQL.
pub(crate) fn wanted() -> bool {
    std::env::var("RXGATE_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// The folder of PostgreSQL's programs, if they are installed.
pub(crate) fn binaries() -> Option<PathBuf> {
    let named = std::env::var_os("RXGATE_PG_BIN").map(PathBuf::from);
    named
        .into_iter()
        .chain([PathBuf::from("/usr/lib/postgresql/15/bin")])
        .find(|dir| dir.join("initdb").is_file())
}

/// A cluster: the test process's shared one, or one of a test's own (`Cluster::own`,
/// `Cluster::standby`).
pub(crate) struct Cluster {
    folder: PathBuf,
    /// The server's log: `RXGATE_PG_LOG` if set (kept after the tests, for `.ci/run` to read),
    /// else in the folder.
    log: PathBuf,
    bin: PathBuf,
    port: u16,
    databases: AtomicU32,
    /// The shell that stops the server when its stdin closes (when this is dropped, or at the
    /// process's end).
    _keeper: Mutex<Child>,
}

/// The cluster, started on first use. Panics when PostgreSQL is not installed.
pub(crate) fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

/// The cluster, or `None` (said on stderr) when PostgreSQL is not installed outside CI.
pub(crate) fn installed() -> Option<&'static Cluster> {
    wanted_here().then(cluster)
}

/// Whether a test that needs PostgreSQL runs: always under CI (where its absence fails the
/// test), else when it is installed; when it does not, says SKIPPED on stderr.
pub(crate) fn wanted_here() -> bool {
    if binaries().is_none() && std::env::var_os("CI").is_none() {
        eprintln!("SKIPPED: PostgreSQL 15 is not installed (apt-get install postgresql-15)");
        return false;
    }
    true
}

/// The passwords of the two roles (test-only secrets, in files as production keeps them).
const APP_PASSWORD: &str = "app-password-for-tests";
const OWNER_PASSWORD: &str = "owner-password-for-tests";

impl Cluster {
    fn start() -> Cluster {
        let folder = std::env::temp_dir().join(format!("rxgate-pg-{}", std::process::id()));
        Cluster::made_in(folder, "", "")
    }

    /// A cluster apart from the shared one (a failover drill's primary), in a folder of its own
    /// named after `name`, with `settings` added to its postgresql.conf and replication
    /// connections (`pg_basebackup`, a standby's) trusted on its local socket; stopped, and its
    /// folder removed, when dropped.
    pub(crate) fn own(name: &str, settings: &str) -> Cluster {
        let folder = std::env::temp_dir().join(format!("rxgate-pg-{}-{name}", std::process::id()));
        Cluster::made_in(folder, settings, "local replication all trust\n")
    }

    /// A new cluster in `folder`: certificates, passwords, `initdb`, the settings (`settings`
    /// added) and `pg_hba.conf` (`hba` added), started, with the two roles.
    fn made_in(folder: PathBuf, settings: &str, hba: &str) -> Cluster {
        let bin = binaries().expect(
            "PostgreSQL 15 is not installed (apt-get install postgresql-15, or set RXGATE_PG_BIN)",
        );
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(folder.join("run")).unwrap();
        certificates(&folder);
        for (name, secret) in [
            ("app.password", APP_PASSWORD),
            ("owner.password", OWNER_PASSWORD),
        ] {
            std::fs::write(folder.join(name), secret).unwrap();
        }
        let port = free_port();
        give_to_postgres(&folder);
        let data = folder.join("data");
        run(postgres_user(bin.join("initdb"))
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-U",
                "postgres",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null()));
        append(
            &data.join("postgresql.conf"),
            &format!("{}{settings}", server_settings(&folder, port)),
        );
        // TLS only over TCP, SCRAM for every role; the local socket (setup) trusts.
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n{hba}"),
        )
        .unwrap();
        let cluster = Cluster::running(folder, bin, port);
        cluster.sql(&format!(
            "CREATE ROLE rxgate_owner LOGIN PASSWORD '{OWNER_PASSWORD}';
             CREATE ROLE rxgate_app LOGIN PASSWORD '{APP_PASSWORD}';"
        ));
        cluster
    }

    /// Starts the server of the data folder `folder/data` (configured to listen on `port`),
    /// its log opened as the tests keep it, and waits until it accepts connections.
    fn running(folder: PathBuf, bin: PathBuf, port: u16) -> Cluster {
        let log = std::env::var_os("RXGATE_PG_LOG")
            .map_or_else(|| folder.join("server.log"), PathBuf::from);
        // Several test processes and clusters may share it: each appends.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        if as_root() {
            run(Command::new("chown").arg("postgres").arg(&log));
        }
        let keeper = keeper(&bin, &folder.join("data"), (&folder, &log));
        let cluster = Cluster {
            folder,
            log,
            bin,
            port,
            databases: AtomicU32::new(0),
            _keeper: Mutex::new(keeper),
        };
        cluster.wait_ready();
        cluster
    }

    /// A streaming standby of this cluster, made with `pg_basebackup` in a folder of its own
    /// beside this one's, with this one's certificates and passwords (a client verifies both
    /// servers against one CA), connecting as `application_name = name`: the name the primary's
    /// `synchronous_standby_names` must list for it to be synchronous.
    pub(crate) fn standby(&self, name: &str) -> Cluster {
        let mut stem = self.folder.file_name().unwrap().to_owned();
        stem.push(format!("-{name}"));
        let folder = self.folder.with_file_name(stem);
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(folder.join("run")).unwrap();
        let shared = [
            "ca.pem",
            "server.pem",
            "server.key",
            "app.password",
            "owner.password",
        ];
        for file in shared {
            std::fs::copy(self.folder.join(file), folder.join(file)).unwrap();
        }
        give_to_postgres(&folder);
        let data = folder.join("data");
        run(postgres_user(self.bin.join("pg_basebackup"))
            .args([
                "--checkpoint=fast",
                "--wal-method=stream",
                "-U",
                "postgres",
                "-h",
            ])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-D"])
            .arg(&data));
        run(postgres_user(PathBuf::from("touch")).arg(data.join("standby.signal")));
        let port = free_port();
        let primary = format!(
            "primary_conninfo = 'host={} port={} user=postgres application_name={name}'\n",
            self.socket_dir().display(),
            self.port,
        );
        append(
            &data.join("postgresql.conf"),
            &format!("{}{primary}", server_settings(&folder, port)),
        );
        Cluster::running(folder, self.bin.clone(), port)
    }

    /// The port it listens on (127.0.0.1).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Kills its postmaster with SIGKILL (the first line of `postmaster.pid`), as a crash of
    /// the machine would stop it: nothing is shut down, its sessions end without an answer.
    pub(crate) fn kill(&self) {
        let pid_file = std::fs::read_to_string(self.folder.join("data/postmaster.pid")).unwrap();
        let pid = pid_file.lines().next().unwrap();
        run(Command::new("kill").args(["-KILL", pid]));
    }

    /// Promotes a standby to a primary (`pg_ctl promote -w`): returns once it accepts writes.
    pub(crate) fn promote(&self) {
        run(postgres_user(self.bin.join("pg_ctl"))
            .args(["promote", "-w", "-D"])
            .arg(self.folder.join("data"))
            .stdout(Stdio::null()));
    }

    fn wait_ready(&self) {
        for _ in 0..300 {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-U", "postgres", "-h"])
                .arg(self.folder.join("run"))
                .args(["-p", &self.port.to_string()])
                .status()
                .unwrap();
            if ready.success() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "the test PostgreSQL cluster did not start: see {}",
            self.log.display()
        );
    }

    /// Runs `sql` as the superuser over the local socket.
    pub(crate) fn sql(&self, sql: &str) -> String {
        self.sql_in("postgres", sql)
    }

    /// Runs `sql` in `database` as the superuser over the local socket.
    pub(crate) fn sql_in(&self, database: &str, sql: &str) -> String {
        self.sql_as("postgres", database, sql)
    }

    /// Runs `sql` in `database` as `role` over the local socket (which trusts every role).
    pub(crate) fn sql_as(&self, role: &str, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-v", "ON_ERROR_STOP=1", "-qAtX", "-U", role, "-h"])
            .arg(self.folder.join("run"))
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A superuser session of `database` kept open: psql reading the statements the test writes
    /// to its stdin, so that a transaction can stay open across the test's steps.
    pub(crate) fn session(&self, database: &str) -> Child {
        Command::new(self.bin.join("psql"))
            .args(["-v", "ON_ERROR_STOP=1", "-qAtX", "-U", "postgres", "-h"])
            .arg(self.folder.join("run"))
            .args(["-p", &self.port.to_string(), "-d", database])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// What the server answers `sql` run in `database` as the application role, over TLS with
    /// the server verified (its error output; empty when it succeeded).
    pub(crate) fn as_app(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .env("PGPASSWORD", APP_PASSWORD)
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", self.folder.join("ca.pem"))
            .args([
                "-X",
                "-qAt",
                "-h",
                "127.0.0.1",
                "-U",
                "rxgate_app",
                "-d",
                database,
            ])
            .args(["-p", &self.port.to_string(), "-c", sql])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The folder of the server's Unix socket.
    pub(crate) fn socket_dir(&self) -> PathBuf {
        self.folder.join("run")
    }

    /// The `[postgres]` settings of the application role for database `name`.
    pub(crate) fn config(&self, name: &str) -> PostgresConfig {
        let text = format!(
            "url = \"postgresql://rxgate_app@127.0.0.1:{}/{name}\"\n\
             password_file = \"{}\"\nca_file = \"{}\"\npool_size = 4\n",
            self.port,
            self.folder.join("app.password").display(),
            self.folder.join("ca.pem").display(),
        );
        toml::from_str(&text).unwrap()
    }

    /// The migration role, its password in a file.
    pub(crate) fn migrator(&self) -> rxgate::store::Migrator {
        rxgate::store::Migrator {
            user: "rxgate_owner".into(),
            password_file: Some(self.folder.join("owner.password")),
            password_env: None,
        }
    }

    /// A new, empty database owned by the migration role, not yet migrated.
    pub(crate) fn empty_database(&self) -> PostgresConfig {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("rxgate_test_{n}");
        self.sql(&format!("CREATE DATABASE {name} OWNER rxgate_owner"));
        self.config(&name)
    }

    /// A new database with the schema of this binary, for the application role.
    pub(crate) fn database(&self) -> PostgresConfig {
        let config = self.empty_database();
        let migrator = self.migrator();
        // Off the async runtime: the migration drives a runtime of its own.
        std::thread::scope(|s| {
            s.spawn(|| rxgate::store::PgStore::migrate(&config, Some(&migrator)).unwrap())
                .join()
                .unwrap()
        });
        config
    }
}

/// Whether the tests run as root, under which PostgreSQL refuses to run.
fn as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| Command::new("id").arg("-u").output().unwrap().stdout == b"0\n")
}

/// Gives `folder` to the `postgres` user when the tests run as root.
fn give_to_postgres(folder: &Path) {
    if as_root() {
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(folder));
    }
}

/// `program`, run as the `postgres` user when the tests run as root.
fn postgres_user(program: PathBuf) -> Command {
    if as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The settings of a server in `folder` listening on `port`: over TCP on 127.0.0.1 only, with
/// TLS (the folder's certificate), its socket in `folder/run`. Durability is not what the tests
/// are about (none crashes the machine), so `fsync = off`.
fn server_settings(folder: &Path, port: u16) -> String {
    format!(
        "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
         ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\n\
         shared_buffers = 64MB\nmax_connections = 200\n",
        folder.join("run").display(),
        folder.join("server.pem").display(),
        folder.join("server.key").display(),
    )
}

/// Starts the server under a shell that stops it (fast shutdown) and removes `folder` once its
/// stdin, a pipe from this process, closes: when the `Cluster` is dropped or the tests end,
/// however they end.
fn keeper(bin: &Path, data: &Path, (folder, log): (&Path, &Path)) -> Child {
    let script = format!(
        "'{}' -D '{}' >>'{}' 2>&1 & pid=$!; read _; kill -INT $pid 2>/dev/null; wait $pid; rm -rf '{}'",
        bin.join("postgres").display(),
        data.display(),
        log.display(),
        folder.display(),
    );
    let mut command = postgres_user(PathBuf::from("sh"));
    command.args(["-c", &script]).stdin(Stdio::piped());
    // The pipe's write end stays open in the child's handle until this process ends.
    command.spawn().unwrap()
}

/// A CA and the server's certificate for 127.0.0.1 (P-256), made with openssl.
fn certificates(folder: &Path) {
    let at = |name: &str| folder.join(name).display().to_string();
    certificate_authority(folder, "rxgate test PostgreSQL CA");
    run(new_key(folder, "server", "/CN=127.0.0.1").args(["-out", &at("server.csr")]));
    std::fs::write(
        folder.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args([
            "x509",
            "-req",
            "-in",
            &at("server.csr"),
            "-CA",
            &at("ca.pem"),
        ])
        .args(["-CAkey", &at("ca.key"), "-CAcreateserial", "-days", "2"])
        .args(["-extfile", &at("server.ext"), "-out", &at("server.pem")]));
    use std::os::unix::fs::PermissionsExt;
    let owner_only = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(folder.join("server.key"), owner_only).unwrap();
}

/// A self-signed CA named `name` (P-256): `ca.pem` and `ca.key` in `folder`; the certificate.
pub(crate) fn certificate_authority(folder: &Path, name: &str) -> PathBuf {
    let pem = folder.join("ca.pem");
    run(new_key(folder, "ca", &format!("/CN={name}"))
        .args(["-x509", "-days", "2", "-out"])
        .arg(&pem));
    pem
}

/// `openssl req` making a new P-256 key `{stem}.key` in `folder` for `subject`, to be finished
/// with what it makes (a request or a self-signed certificate).
fn new_key(folder: &Path, stem: &str, subject: &str) -> Command {
    let mut command = Command::new("openssl");
    command
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-subj", subject, "-keyout"])
        .arg(folder.join(format!("{stem}.key")));
    command
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn run(command: &mut Command) {
    let out = command.stderr(Stdio::piped()).output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port for a server, free now and below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768 and up by default, where `bind` to port 0 and every
/// outgoing connection take theirs): between this choice and the server's `bind`, seconds
/// later, no socket of the other tests can take it by chance. Each test process starts at a
/// place of its own and never gives a port twice.
fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let ports = ephemeral.saturating_sub(FIRST).max(1_000);
    let start = std::process::id().wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < ports, "no free port below the ephemeral range");
        let port = (FIRST + start.wrapping_add(n) % ports) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
