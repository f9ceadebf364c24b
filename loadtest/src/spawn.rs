//! `--spawn`: runs `rxgate serve --dev` on a temporary data folder and a free loopback port, so
//! that one command measures a fresh gateway. Ready is the gateway's own "listening" log line
//! (which names the bound address); its log goes to `rxgate.log` in the temporary folder. A run
//! that needs other `[limits]` than the defaults starts it with `--config` instead of `--dev`:
//! the repository's example configuration (the same dev PKI) with those limits added. Both find
//! the repository's files from the working directory, as loadtest is run from its root.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStderr, Command},
    sync::oneshot,
};

/// The example configuration, relative to the repository root (the working directory); the
/// paths in it are relative to the same root.
const EXAMPLE_CONFIG: &str = "examples/rxgate.toml";

/// How long the gateway may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A spawned gateway; killed when stopped or dropped, its folder removed.
pub struct Gateway {
    child: Child,
    /// e.g. `https://127.0.0.1:43121`.
    pub addr: String,
    /// Where it serves `GET /metrics`, e.g. `127.0.0.1:43122`.
    pub metrics: String,
    pub dir: tempfile::TempDir,
}

/// The gateway binary: the one `named`, else `rxgate` beside the running binary (both are
/// built into the same target folder).
pub fn binary(named: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = named {
        return Ok(path.to_owned());
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    Ok(exe.with_file_name(format!("rxgate{}", std::env::consts::EXE_SUFFIX)))
}

impl Gateway {
    /// Starts `binary` as `serve --dev`, or, given `limits` (the body of a `[limits]` table),
    /// with a configuration that sets them.
    pub async fn start(binary: &Path, limits: Option<&str>) -> anyhow::Result<Self> {
        if !binary.is_file() {
            bail!(
                "no rxgate binary at {}: build it (cargo build --release --bin rxgate) or name \
                 it with --rxgate-bin",
                binary.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("rxgate-loadtest-")
            .tempdir()?;
        let store = dir.path().join("store");
        let mut command = Command::new(binary);
        command.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ]);
        match limits {
            None => command.arg("--dev").arg("--data-dir").arg(&store),
            Some(limits) => {
                let config = dir.path().join("rxgate.toml");
                std::fs::write(&config, configuration(&store, limits)?)?;
                command.arg("--config").arg(config)
            }
        };
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let log = dir.path().join("rxgate.log");
        let (ready, listening) = oneshot::channel();
        tokio::spawn(follow_log(stderr, log.clone(), ready));
        let addr = tokio::select! {
            addr = listening => addr.ok(),
            _ = tokio::time::sleep(START_TIMEOUT) => None,
        };
        let Some((addr, metrics)) = addr else {
            let _ = child.kill().await;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("the gateway did not start listening; its log:\n{text}");
        };
        Ok(Gateway {
            child,
            addr: format!("https://{addr}"),
            metrics,
            dir,
        })
    }

    /// The gateway's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the gateway and waits for it (the data folder goes with `self`).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("stopping the gateway")
    }
}

/// The example configuration (`examples/rxgate.toml`, whose paths name the committed dev PKI)
/// with its store in `store` and the `[limits]` table `limits`.
fn configuration(store: &Path, limits: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(EXAMPLE_CONFIG).with_context(|| {
        format!("reading {EXAMPLE_CONFIG}: run loadtest from the repository root")
    })?;
    let mut config: String = text
        .lines()
        .map(|line| {
            if line.starts_with("data_dir =") {
                format!("data_dir = {:?}\n", store.display().to_string())
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    config.push_str(&format!("\n[limits]\n{limits}\n"));
    Ok(config)
}

/// Copies the gateway's log to `path`; sends the addresses of its "rxgate listening" line.
async fn follow_log(stderr: ChildStderr, path: PathBuf, ready: oneshot::Sender<(String, String)>) {
    let Ok(mut file) = tokio::fs::File::create(&path).await else {
        return;
    };
    let mut ready = Some(ready);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(addrs) = listening_addrs(&line)
            && let Some(ready) = ready.take()
        {
            let _ = ready.send(addrs);
        }
        if file
            .write_all(format!("{line}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The gRPC and metrics addresses in the gateway's `rxgate listening … addr=127.0.0.1:PORT
/// metrics=127.0.0.1:PORT` log line.
fn listening_addrs(line: &str) -> Option<(String, String)> {
    if !line.contains("rxgate listening") {
        return None;
    }
    let field = |name: &str| {
        let rest = &line[line.find(name)? + name.len()..];
        Some(rest.split_whitespace().next().unwrap_or(rest).to_owned())
    };
    Some((field(" addr=")?, field(" metrics=")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_names_the_addresses() {
        let line = "2026-01-01T00:00:00.000000Z  INFO rxgate::app: rxgate listening (gRPC over \
                    mutual TLS) addr=127.0.0.1:40123 metrics=127.0.0.1:40124";
        assert_eq!(
            listening_addrs(line),
            Some(("127.0.0.1:40123".into(), "127.0.0.1:40124".into()))
        );
        assert_eq!(listening_addrs("INFO other addr=1.2.3.4:5"), None);
    }
}
