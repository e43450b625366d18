//! Processes and their surroundings: unique names, scratch directories,
//! where the binaries are, free ports, waiting without sleeping, and what a
//! failing test prints (log tails).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name for this test run (databases, node ids, directories).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A fresh directory for one process's files.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A Gatehouse binary from the same target directory as the running test
/// (`target/<profile>/deps/…`) or benchmark (`target/<profile>/…`).
pub fn gatehouse_bin(name: &str) -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("GATEHOUSE_BIN_DIR") {
        Some(dir) => vec![PathBuf::from(dir).join(name)],
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .map(|dir| {
                let mut list = vec![dir.join(name)];
                if let Some(parent) = dir.parent() {
                    list.push(parent.join(name));
                }
                list
            })
            .unwrap_or_default(),
    };
    candidates
        .iter()
        .find(|bin| bin.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!("{name} not found in {candidates:?}: build the binaries first (cargo build --workspace --bins)")
        })
}

/// Envoy from `GATEHOUSE_ENVOY`, the project venv, or `PATH`.
pub fn envoy_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("GATEHOUSE_ENVOY") {
        return PathBuf::from(path);
    }
    let venv = workspace_root().join(".venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("envoy")
}

/// A port that was free a moment ago (for addresses a child process must bind).
///
/// Taken below the kernel's ephemeral range when there is room: a port from
/// that range can be handed to any outgoing connection (parallel tests make
/// many) before the child binds it. Here only another test picking the same
/// port at the same moment can take it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(0);
    const LOW: u16 = 20_000;
    if ephemeral_low > LOW + 1_000 {
        let span = u64::from(ephemeral_low - LOW);
        // Each process starts somewhere else in the range.
        let seed = u64::from(std::process::id()).wrapping_mul(7_919)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::from(d.subsec_nanos()));
        for _ in 0..span {
            let offset = (seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))) % span;
            let port = LOW + offset as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// Prints the last `lines` of a process's log under a heading.
pub(crate) fn print_tail(what: &str, path: &Path, lines: usize) {
    eprintln!("----- {what} log (tail) -----\n{}", tail(path, lines));
}

pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A plain blocking GET, usable from `Drop` while a test panics.
pub(crate) fn blocking_get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return "<unreachable>".into();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body
}

pub(crate) async fn spawn(program: &Path, args: &[String], log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    let err = file.try_clone().expect("log file");
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()))
}

/// Sends SIGTERM to `child` and waits for its exit code (None: killed by a
/// signal).
pub(crate) async fn terminate(child: &mut Child) -> Option<i32> {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    child.wait().await.ok().and_then(|s| s.code())
}

/// A process's resident memory, in KiB.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .expect("the process's RSS")
}
