//! A real Prometheus server (Debian's `prometheus`, installed by
//! scripts/setup-prometheus.sh) on loopback, for the tests that query one.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Prometheus process, killed on drop.
pub struct Prometheus {
    child: Child,
    /// `127.0.0.1:port`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts Prometheus on loopback scraping `target` every second, and
/// waits until `metric` is queryable.
pub async fn start(target: std::net::SocketAddr, metric: &str) -> Prometheus {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: demo\n    static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .expect("config");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--storage.tsdb.retention.time=1h")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the prometheus binary is required: run scripts/setup-prometheus.sh (scripts/test.sh does)");
    let server = Prometheus {
        child,
        addr,
        _dir: dir,
    };
    // Wait until the first scrape is queryable (~6 s), never a fixed sleep.
    let client = reqwest_free_get;
    let started = Instant::now();
    loop {
        if let Some(body) = client(&server.addr, &format!("/api/v1/query?query={metric}")).await
            && body.contains("\"value\"")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "prometheus did not scrape the exporter within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server
}

/// A minimal HTTP GET on loopback, for readiness polling.
async fn reqwest_free_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await.ok()?;
    Some(response)
}
