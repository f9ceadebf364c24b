//! The real `rxgate serve` (`--dev`, or with a configuration file) as a child process, for the
//! tests that signal or SIGKILL it or measure it from outside. It listens on 127.0.0.1:0 (gRPC and metrics) and the addresses are read from
//! its own "rxgate listening" log line, as `loadtest --spawn` does (loadtest/src/spawn.rs): no
//! port is picked beforehand and raced for by whatever else binds one in between. Its output goes
//! to a log file the test names, complete once the process is killed.
//!
//! `PortHold` is for the address a test must name before its gateway exists or keep across a
//! restart (a relay's upstream): a port bound for the whole test and never listened on.

use std::{
    ffi::OsString,
    fs::File,
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, ExitStatus, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use socket2::{Domain, Socket, Type};
use tokio::sync::oneshot;

/// How long a gateway may take to say that it listens (a loaded machine, a large store).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// What `rxgate serve` is configured by.
enum Configured {
    /// `--dev --data-dir DIR`.
    Dev(PathBuf),
    /// `--config FILE`.
    File(PathBuf),
}

/// How to start `rxgate serve`.
pub(crate) struct Serve {
    configured: Configured,
    log: PathBuf,
    rust_log: String,
    listen: SocketAddr,
    relay_upstream: Option<String>,
    /// Further options (before `serve`: global ones such as `--log-format` go anywhere).
    options: Vec<String>,
    env: Vec<(String, OsString)>,
    /// The program and arguments `rxgate` runs under (empty: none), e.g. `nsenter -t PID -m --`.
    wrapper: Vec<OsString>,
}

impl Serve {
    /// `rxgate serve --dev` on the store `data_dir`, at RUST_LOG=info, gRPC and metrics on
    /// 127.0.0.1:0; its standard output and error appended to `log`.
    pub(crate) fn dev(data_dir: &Path, log: &Path) -> Serve {
        Serve::configured(Configured::Dev(data_dir.to_owned()), log)
    }

    /// `rxgate serve --config FILE`, otherwise as [`Serve::dev`].
    pub(crate) fn config(file: &Path, log: &Path) -> Serve {
        Serve::configured(Configured::File(file.to_owned()), log)
    }

    fn configured(configured: Configured, log: &Path) -> Serve {
        Serve {
            configured,
            log: log.to_owned(),
            rust_log: "info".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            relay_upstream: None,
            options: Vec::new(),
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// One more command-line option, e.g. `--log-format json`.
    pub(crate) fn option(mut self, name: &str, value: &str) -> Serve {
        self.options.extend([name.to_owned(), value.to_owned()]);
        self
    }

    /// One more command-line flag, e.g. `--accept-data-loss`.
    pub(crate) fn flag(mut self, name: &str) -> Serve {
        self.options.push(name.to_owned());
        self
    }

    /// An environment variable of the process.
    pub(crate) fn env(mut self, name: &str, value: impl Into<OsString>) -> Serve {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// The RUST_LOG filter (the listening line is at INFO: it must let that through).
    pub(crate) fn rust_log(mut self, filter: &str) -> Serve {
        self.rust_log = filter.into();
        self
    }

    /// gRPC on `addr` instead of a port of its own: a `PortHold`'s.
    pub(crate) fn listen(mut self, addr: SocketAddr) -> Serve {
        self.listen = addr;
        self
    }

    /// Relays dispensing records to the gateway at `url` (`--relay-upstream`).
    pub(crate) fn relay_upstream(mut self, url: String) -> Serve {
        self.relay_upstream = Some(url);
        self
    }

    /// Runs `rxgate` as the last argument of `wrapper`, a program that executes it in place
    /// (so that the process is rxgate's), e.g. `nsenter -t PID -m --`.
    pub(crate) fn inside(mut self, wrapper: &[OsString]) -> Serve {
        self.wrapper = wrapper.to_vec();
        self
    }

    /// The command line and environment of `rxgate serve` as configured.
    fn command(&self) -> Command {
        let rxgate = env!("CARGO_BIN_EXE_rxgate");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(rxgate);
                command
            }
            None => Command::new(rxgate),
        };
        command.arg("serve");
        match &self.configured {
            Configured::Dev(data_dir) => command.args(["--dev", "--data-dir"]).arg(data_dir),
            Configured::File(file) => command.arg("--config").arg(file),
        };
        command
            .args(&self.options)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["--listen", &self.listen.to_string()])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("RUST_LOG", &self.rust_log);
        if let Some(upstream) = &self.relay_upstream {
            command.args(["--relay-upstream", upstream]);
        }
        command
    }

    /// Starts it; returns once it has logged the addresses it listens on. Panics with its log
    /// if it exits first or takes longer than `START_TIMEOUT`.
    pub(crate) async fn start(self) -> Rxgate {
        start(self.command(), &self.log).await
    }

    /// Runs a gateway that must refuse to start, to its end: how it exited (`exit status: 1`)
    /// and its log. Panics with its log if it listens instead, or neither within
    /// `START_TIMEOUT`.
    pub(crate) async fn refused(self) -> (String, String) {
        let (mut rxgate, listening) = spawn(self.command(), &self.log);
        let outcome = tokio::time::timeout(START_TIMEOUT, listening).await;
        let status = rxgate.stop();
        match outcome {
            Ok(Err(_)) => (status, rxgate.output()),
            Ok(Ok(_)) => panic!("rxgate serve listened:\n{}", rxgate.output()),
            Err(_) => panic!(
                "rxgate serve neither listened nor exited within {START_TIMEOUT:?}:\n{}",
                rxgate.output()
            ),
        }
    }
}

/// Spawns `command` (any `rxgate serve`, however it is started), its output appended to
/// `log_path`: the receiver is answered with the addresses once it has logged them, or dropped
/// unanswered when it exits first.
fn spawn(
    mut command: Command,
    log_path: &Path,
) -> (Rxgate, oneshot::Receiver<(SocketAddr, SocketAddr)>) {
    let log = File::options()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            log.try_clone().expect("cloning the log handle"),
        ))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning rxgate serve");
    let stderr = child.stderr.take().expect("piped");
    let (found, listening) = oneshot::channel();
    let rxgate = Rxgate {
        child,
        addr: String::new(),
        metrics: SocketAddr::from(([127, 0, 0, 1], 0)),
        log: log_path.to_owned(),
        copier: Some(std::thread::spawn(move || copy_log(stderr, log, found))),
    };
    (rxgate, listening)
}

/// Starts `command` (any `rxgate serve`, however it is started), its output appended to
/// `log_path`; returns once it has logged the ports it serves on. Panics with its log if it
/// exits first or takes longer than `START_TIMEOUT`.
pub(crate) async fn start(command: Command, log_path: &Path) -> Rxgate {
    let (mut rxgate, listening) = spawn(command, log_path);
    match tokio::time::timeout(START_TIMEOUT, listening).await {
        Ok(Ok((addr, metrics))) => {
            rxgate.addr = format!("https://{addr}");
            rxgate.metrics = metrics;
            rxgate
        }
        Ok(Err(_)) => {
            let status = rxgate.stop();
            panic!(
                "rxgate serve exited ({status}) before it listened:\n{}",
                rxgate.output()
            )
        }
        Err(_) => {
            rxgate.stop();
            panic!(
                "rxgate serve did not listen within {START_TIMEOUT:?}:\n{}",
                rxgate.output()
            )
        }
    }
}

/// A running `rxgate serve`; killed (SIGKILL) when killed or dropped.
pub(crate) struct Rxgate {
    child: Child,
    /// gRPC, e.g. `https://127.0.0.1:43121`.
    pub addr: String,
    /// Where it serves `GET /metrics`.
    pub metrics: SocketAddr,
    log: PathBuf,
    /// Copies its standard error to the log; done when the process is gone.
    copier: Option<JoinHandle<()>>,
}

impl Rxgate {
    /// SIGKILL (what `Child::kill` sends on Unix), then reap; the log is complete afterwards.
    pub(crate) fn kill(mut self) {
        self.stop();
    }

    /// Sends it the signal `name` (`TERM`, `INT`, as `kill -s` spells them).
    pub(crate) fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -s {name} failed");
    }

    /// Its exit status, once it has exited within `within` (None if it has not: it is
    /// still running then).
    pub(crate) fn exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for rxgate") {
                if let Some(copier) = self.copier.take() {
                    let _ = copier.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What it has written so far (its log file).
    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its resident set (VmRSS), in bytes.
    pub(crate) fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// Kills and reaps the process, then waits for the copier to write its last lines.
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let status = self.child.wait();
        if let Some(copier) = self.copier.take() {
            let _ = copier.join();
        }
        match status {
            Ok(status) => status.to_string(),
            Err(e) => format!("not reaped: {e}"),
        }
    }
}

impl Drop for Rxgate {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies `stderr` line by line, byte for byte, to `log`; sends the addresses of the first
/// "rxgate listening" line to `found`.
fn copy_log(stderr: ChildStderr, mut log: File, found: oneshot::Sender<(SocketAddr, SocketAddr)>) {
    let mut found = Some(found);
    let mut stderr = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match stderr.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let _ = log.write_all(&line);
        if let Some(addrs) = listening_addrs(&String::from_utf8_lossy(&line))
            && let Some(found) = found.take()
        {
            let _ = found.send(addrs);
        }
    }
}

/// The gRPC and metrics addresses of the gateway's `rxgate listening … addr=127.0.0.1:PORT
/// metrics=127.0.0.1:PORT` line (src/app.rs), written as text or as JSON.
fn listening_addrs(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if !line.contains("rxgate listening") {
        return None;
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        let field = |name: &str| json["fields"][name].as_str()?.parse().ok();
        return Some((field("addr")?, field("metrics")?));
    }
    let field = |name: &str| {
        let rest = &line[line.find(name)? + name.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    Some((field(" addr=")?, field(" metrics=")?))
}

/// A loopback port bound for as long as this lives and never listened on (Linux semantics):
/// connections to it are refused until a gateway listens there; a gateway can bind it while
/// it is held, and bind it again after a restart, because both sockets set SO_REUSEADDR (tokio's
/// `TcpListener::bind`, which rxgate uses, does) and neither listens; and no socket that binds
/// port 0 is given it meanwhile. A port found free and released, by contrast, is anyone's until
/// the gateway binds it.
pub(crate) struct PortHold(Socket);

impl PortHold {
    pub(crate) fn new() -> PortHold {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("binding 127.0.0.1:0");
        PortHold(socket)
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.0
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("a bound IPv4 address")
    }
}
