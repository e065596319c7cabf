//! The service manager's notification protocol (`sd_notify(3)`): `READY=1` once the server
//! listens, `STOPPING=1` when it stops, so `Type=notify` (deploy/systemd/kz-groups.service) counts
//! kz-groups started only when it takes connections. Without `NOTIFY_SOCKET` (not under systemd,
//! or under another `Type=`) it does nothing; a failure to send is logged, never fatal.
use std::os::unix::net::UnixDatagram;

/// Tells the service manager the server takes connections.
pub fn ready() {
    notify("READY=1");
}

/// Tells the service manager the server is stopping (requests in flight may still finish).
pub fn stopping() {
    notify("STOPPING=1");
}

fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&socket.to_string_lossy(), state) {
        log::warn!("cannot notify the service manager ({state}) at NOTIFY_SOCKET: {e}");
    }
}

/// One datagram to `socket`: a path, or `@name` for a Linux abstract socket (systemd uses both).
fn send(socket: &str, state: &str) -> std::io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sender.send_to_addr(state.as_bytes(), &address)?;
        }
        None => {
            sender.send_to(state.as_bytes(), socket)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_reaches_a_socket_named_by_path_or_by_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("kz-groups-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        send(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nobody");
        assert!(send(path.to_str().unwrap(), "READY=1").is_err());
    }
}
