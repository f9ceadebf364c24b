//! systemd's readiness protocol (sd_notify(3)), by hand: when the service manager sets
//! `NOTIFY_SOCKET`, a datagram `READY=1` once the gateway listens and `STOPPING=1` when its
//! drain begins, so that `Type=notify` units start their dependants only when the gateway
//! answers, and show the drain. Without the variable nothing is sent. Depends on std only.

use std::{
    io,
    os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixDatagram},
    },
};

/// The service manager's notification socket, if it gave one.
pub struct Notifier {
    target: Option<SocketAddr>,
}

impl Notifier {
    /// The socket `NOTIFY_SOCKET` names: a path, or an abstract name written with a leading `@`.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|name| {
            address(&name.to_string_lossy())
                .inspect_err(|e| tracing::warn!(error = %e, "NOTIFY_SOCKET unusable: ignored"))
                .ok()
        });
        Notifier { target }
    }

    /// The gateway listens and answers.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// The drain has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Sends `state`; a failure is logged, never fatal (the gateway serves all the same).
    fn send(&self, state: &str) {
        if let Some(target) = &self.target
            && let Err(e) = send_to(target, state)
        {
            tracing::warn!(error = %e, state, "systemd notification not sent");
        }
    }
}

/// The socket address `NOTIFY_SOCKET` spells: `@name` is abstract, anything else a path.
fn address(name: &str) -> io::Result<SocketAddr> {
    match name.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
        None => SocketAddr::from_pathname(name),
    }
}

fn send_to(target: &SocketAddr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(state.as_bytes(), target)?;
    if sent != state.len() {
        return Err(io::Error::other("the datagram was cut short"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_and_an_abstract_name_both_receive_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let by_path = UnixDatagram::bind(&path).unwrap();
        let abstract_name = format!("rxgate-test-{}", std::process::id());
        let by_name =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&abstract_name).unwrap())
                .unwrap();
        for (socket, spelled) in [
            (by_path, path.to_str().unwrap().to_owned()),
            (by_name, format!("@{abstract_name}")),
        ] {
            Notifier {
                target: Some(address(&spelled).unwrap()),
            }
            .ready();
            let mut buffer = [0; 64];
            let n = socket.recv(&mut buffer).unwrap();
            assert_eq!(&buffer[..n], b"READY=1");
        }
    }
}
