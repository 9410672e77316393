//! `rediss://`: Flux talks TLS to a Redis whose certificate comes from a private CA, trusted
//! through the standard `SSL_CERT_FILE`; an untrusted certificate is refused (and the failure
//! policy applies), never silently accepted.

use std::path::Path;
use std::process::Command;

use crate::support::{Conn, Instance, RedisServer, wait_healthy};

/// A CA and a server certificate for 127.0.0.1, made with `openssl`.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl not found on PATH: install it (Debian/Ubuntu: apt-get install -y openssl) or run scripts/test");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write san.ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=flux-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn statuses(instance: &Instance, client: &str, n: usize) -> Vec<u16> {
    let mut conn = Conn::open(instance.addr()).await.expect("connect");
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            conn.get("/many", &[("x-client", client.as_bytes())])
                .await
                .expect("answer")
                .status,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_limits_and_an_untrusted_certificate_is_refused() {
    let certs = tempfile::tempdir().expect("temp dir");
    certificates(certs.path());
    let path = |name: &str| certs.path().join(name).display().to_string();
    let tls_port = free_port().to_string();
    let redis = RedisServer::builder()
        .config("tls-port", &tls_port)
        .config("tls-cert-file", &path("server.crt"))
        .config("tls-key-file", &path("server.key"))
        .config("tls-ca-cert-file", &path("ca.crt"))
        .config("tls-auth-clients", "no")
        .start();
    let url = format!("rediss://127.0.0.1:{tls_port}/");

    // Trusted through SSL_CERT_FILE (read by the system trust store loader).
    let ca = path("ca.crt");
    let trusted = Instance::start(&[
        ("FLUX_REDIS_URL", url.as_str()),
        ("FLUX_FAILURE_POLICY", "closed"),
        ("FLUX_DEADLINE_MS", "2000"),
        ("SSL_CERT_FILE", ca.as_str()),
    ]);
    wait_healthy(std::slice::from_ref(&trusted)).await;
    assert_eq!(
        statuses(&trusted, "tls-client", 4).await,
        [200, 200, 200, 429]
    );
    assert_eq!(
        redis.cli(&["EXISTS", &redis.bucket("flux", "tls-client", "many")]),
        "1",
        "the bucket lives in Redis"
    );

    // The same URL without the CA: the handshake fails, the `closed` policy answers 503, and
    // the log says why.
    let empty = certs.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write empty trust store");
    let untrusted = Instance::start(&[
        ("FLUX_REDIS_URL", url.as_str()),
        ("FLUX_FAILURE_POLICY", "closed"),
        ("FLUX_DEADLINE_MS", "2000"),
        ("SSL_CERT_FILE", &empty.display().to_string()),
    ]);
    wait_healthy(std::slice::from_ref(&untrusted)).await;
    assert_eq!(statuses(&untrusted, "other", 4).await, [503, 503, 503, 503]);
    let log = untrusted.log();
    assert!(
        log.to_lowercase().contains("certificate"),
        "the log names the certificate problem:\n{log}"
    );
}
