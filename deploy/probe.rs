//! `hermod-probe PATH`: the container health check. The image has no shell
//! and no curl, so this small program GETs PATH (default `/health/ready`)
//! from the node's admin HTTP port and exits 0 on a 200 answer, 1 otherwise.
//!
//! The port comes from `HERMOD_ADMIN_LISTEN` (default 127.0.0.1:7401); an
//! unspecified listen address (0.0.0.0 or [::]) is dialled on loopback.
//! Built with plain `rustc` by deploy/build-image.sh: std only, no crates.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

const DEFAULT_ADMIN: &str = "127.0.0.1:7401";
const TIMEOUT: Duration = Duration::from_secs(3);

fn target() -> Result<SocketAddr, String> {
    let text = std::env::var("HERMOD_ADMIN_LISTEN").unwrap_or_else(|_| DEFAULT_ADMIN.into());
    let mut addr: SocketAddr = text
        .parse()
        .map_err(|e| format!("HERMOD_ADMIN_LISTEN {text:?}: {e}"))?;
    if addr.ip().is_unspecified() {
        let loopback = match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        addr.set_ip(loopback);
    }
    Ok(addr)
}

fn probe(path: &str) -> Result<String, String> {
    let addr = target()?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.lines().next().unwrap_or_default().to_string();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().trim().to_string();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(body)
    } else {
        Err(format!("{status} {body}"))
    }
}

fn main() -> ExitCode {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/health/ready".into());
    match probe(&path) {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("hermod-probe {path}: {error}");
            ExitCode::FAILURE
        }
    }
}
