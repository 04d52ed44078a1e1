//! The real `weir run` and its object API: served on loopback only, to
//! requests carrying the token it writes beside the store (mode 0600), which
//! the command line reads; a request without it is refused and writes
//! nothing; `--listen` on another address is refused unless the object API
//! is off.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

fn plugins() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/plugin")
}

fn run(store: &Path, extra: &[&str]) -> Child {
    weir()
        .arg("run")
        .arg("--store")
        .arg(store)
        .arg("--plugins")
        .arg(plugins())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir run")
}

/// The address `weir run` wrote, once it is up.
fn address(store: &Path) -> String {
    let file = store.with_extension("redb.addr");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file)
            && !text.trim().is_empty()
        {
            return text.trim().to_string();
        }
        assert!(Instant::now() < deadline, "no {}", file.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status_of(url: &str, token: Option<&str>) -> u16 {
    let mut request = wire::request(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.status()
}

mod wire {
    //! A plain HTTP/1.1 request over a socket: the test checks the wire.
    use std::io::{Read, Write};

    pub struct Request {
        url: String,
        method: &'static str,
        headers: Vec<String>,
        body: String,
    }

    pub fn request(url: &str) -> Request {
        Request {
            url: url.to_string(),
            method: "GET",
            headers: vec![],
            body: String::new(),
        }
    }

    impl Request {
        pub fn post(mut self, body: &str) -> Self {
            self.method = "POST";
            self.body = body.to_string();
            self
        }

        pub fn header(mut self, name: &str, value: String) -> Self {
            self.headers.push(format!("{name}: {value}"));
            self
        }

        pub fn status(self) -> u16 {
            let rest = self.url.trim_start_matches("http://");
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            let mut stream = std::net::TcpStream::connect(host).expect("connect");
            let mut head = format!(
                "{} /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {}\r\n",
                self.method,
                self.body.len()
            );
            for h in &self.headers {
                head.push_str(h);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).expect("write");
            stream.write_all(self.body.as_bytes()).expect("write");
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response);
            response
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0)
        }
    }
}

const CONFIG_MAP: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe, namespace: shop}\ndata: {k: v}\n";

#[test]
fn the_object_api_needs_the_token_beside_the_store() {
    let dir = tempfile::tempdir().expect("dir");
    let store = dir.path().join("store.redb");
    let mut controller = run(&store, &["--listen", "127.0.0.1:0"]);
    let base = format!("http://{}", address(&store));
    let token_path = dir.path().join("store.redb.token");
    let token = std::fs::read_to_string(&token_path).expect("the token beside the store");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner may read the token");
    }
    // Without the token, or with a wrong one: 401, and nothing written.
    let write = r#"[{"op": "create", "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "intruder", "namespace": "shop"}}]"#;
    assert_eq!(
        wire::request(&format!("{base}/api/v1/apply"))
            .post(write)
            .status(),
        401
    );
    assert_eq!(
        status_of(
            &format!("{base}/api/v1/get?kind=ConfigMap&namespace=shop&name=intruder"),
            Some("wrong")
        ),
        401
    );
    assert_eq!(
        status_of(
            &format!("{base}/api/v1/get?kind=ConfigMap&namespace=shop&name=intruder"),
            Some(token.trim())
        ),
        404,
        "the refused write did not land"
    );
    assert_eq!(status_of(&format!("{base}/metrics"), None), 200);
    // The command line reads the token and goes through.
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(&manifest, CONFIG_MAP).expect("write");
    let applied = weir()
        .arg("apply")
        .arg("-f")
        .arg(&manifest)
        .arg("--store")
        .arg(&store)
        .output()
        .expect("weir apply");
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert_eq!(
        status_of(
            &format!("{base}/api/v1/get?kind=ConfigMap&namespace=shop&name=probe"),
            Some(token.trim())
        ),
        200
    );
    let _ = controller.kill();
    let _ = controller.wait();
}

#[test]
fn listening_beyond_loopback_is_refused_unless_the_object_api_is_off() {
    let dir = tempfile::tempdir().expect("dir");
    let store = dir.path().join("store.redb");
    let refused = run(&store, &["--listen", "0.0.0.0:0"])
        .wait_with_output()
        .expect("weir run");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "must refuse: {stderr}");
    assert!(
        stderr.contains("loopback only") && stderr.contains("--no-object-api"),
        "{stderr}"
    );
    assert!(!dir.path().join("store.redb.token").exists());

    let mut metrics_only = run(&store, &["--listen", "0.0.0.0:0", "--no-object-api"]);
    let address = address(&store).replace("0.0.0.0", "127.0.0.1");
    let base = format!("http://{address}");
    assert_eq!(status_of(&format!("{base}/metrics"), None), 200);
    assert_eq!(
        status_of(&format!("{base}/api/v1/list?kind=ConfigMap"), None),
        404,
        "no object API at all"
    );
    assert!(!dir.path().join("store.redb.token").exists());
    let _ = metrics_only.kill();
    let _ = metrics_only.wait();
}
