//! Tests of the test harness itself (`support/`): the throwaway Redis servers and clusters that
//! every other integration suite stands on.

use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::timeout;

use crate::support::{self, RedisCluster, RedisServer};

/// A multiplexed connection to `url`.
async fn connect(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

/// Sends `PING` on `con`.
async fn ping(con: &mut MultiplexedConnection) -> redis::RedisResult<String> {
    redis::cmd("PING").query_async(con).await
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
fn accepts_connections(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_server_answers_on_its_own_port() {
    support::init_tracing();
    let mut server = RedisServer::start();
    assert_ne!(
        server.port(),
        6379,
        "must never use the machine's own Redis"
    );
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/", server.port())
    );
    assert!(server.is_running());

    let mut con = connect(&server.url()).await.expect("connect to the server");
    assert_eq!(ping(&mut con).await.expect("PING"), "PONG");
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await
        .expect("INFO server");
    assert!(
        info.contains(&format!("process_id:{}", server.pid())),
        "the server is our child process:\n{info}"
    );

    assert_eq!(server.cli(&["PING"]), "PONG");
    assert_eq!(server.dbsize(), 0);
    assert!(server.info("server").contains("redis_version:"));
    assert!(
        server.log().contains("Ready to accept connections"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_does_not_answer_until_resumed() {
    let mut server = RedisServer::start();
    let mut con = connect(&server.url()).await.expect("connect to the server");
    assert_eq!(ping(&mut con).await.expect("PING"), "PONG");

    server.pause();
    assert!(server.is_paused());
    assert!(server.is_running(), "a paused server is still alive");
    let reply = timeout(Duration::from_millis(200), ping(&mut con)).await;
    assert!(
        reply.is_err(),
        "a paused server must not answer, got {reply:?}"
    );

    server.resume();
    assert!(!server.is_paused());
    let reply = timeout(Duration::from_secs(5), ping(&mut con))
        .await
        .expect("a resumed server answers in time");
    assert_eq!(reply.expect("PING after resume"), "PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_restarts_on_the_same_port_with_no_data() {
    let mut server = RedisServer::start();
    let port = server.port();
    let old_pid = server.pid();
    let mut con = connect(&server.url()).await.expect("connect to the server");
    let () = redis::cmd("SET")
        .arg("flux:key")
        .arg("value")
        .query_async(&mut con)
        .await
        .expect("SET");
    assert_eq!(server.dbsize(), 1);

    server.kill();
    assert!(!server.is_running());
    assert!(!accepts_connections(port), "a killed server must be gone");
    let reply = timeout(Duration::from_secs(5), ping(&mut con))
        .await
        .expect("a dead server's connection fails fast");
    assert!(reply.is_err(), "PING to a killed server: {reply:?}");

    server.restart();
    assert!(server.is_running());
    assert_eq!(server.port(), port, "restart keeps the port");
    assert_ne!(server.pid(), old_pid, "restart starts a new process");
    let mut con = connect(&server.url()).await.expect("connect after restart");
    assert_eq!(ping(&mut con).await.expect("PING after restart"), "PONG");
    assert_eq!(server.dbsize(), 0, "a restarted server starts empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirepass_needs_the_password() {
    // `:` and `@` must be percent-encoded in the URL.
    let password = "fl:ux@s3cret";
    let server = RedisServer::builder().password(password).start();
    assert_eq!(server.password(), Some(password));

    let mut con = connect(&server.url_with_password(password))
        .await
        .expect("connect with the password");
    assert_eq!(
        ping(&mut con).await.expect("PING with the password"),
        "PONG"
    );

    let without = match connect(&server.url()).await {
        Ok(mut con) => ping(&mut con).await,
        Err(error) => Err(error),
    };
    let error = without.expect_err("PING without a password must fail");
    assert!(
        error.to_string().contains("NOAUTH"),
        "unexpected error without a password: {error}"
    );

    let wrong = match connect(&server.url_with_password("wrong")).await {
        Ok(mut con) => ping(&mut con).await,
        Err(error) => Err(error),
    };
    assert!(wrong.is_err(), "PING with a wrong password must fail");

    // The harness's own commands authenticate by themselves.
    assert_eq!(server.cli(&["PING"]), "PONG");
}

#[test]
fn extra_config_directives_are_applied() {
    let server = RedisServer::builder()
        .config("maxmemory", "2mb")
        .config("maxmemory-policy", "noeviction")
        .start();
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory"]),
        "maxmemory\n2097152"
    );
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory-policy"]),
        "maxmemory-policy\nnoeviction"
    );
    assert_eq!(server.cli(&["CONFIG", "GET", "save"]), "save");
    assert_eq!(
        server.cli(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nno"
    );
}

#[test]
fn command_calls_counts_script_calls_and_flush_scripts_empties_the_cache() {
    let server = RedisServer::start();
    assert_eq!(server.command_calls("evalsha"), 0);

    let sha = server.cli(&["SCRIPT", "LOAD", "return 1"]);
    for _ in 0..3 {
        assert_eq!(server.cli(&["EVALSHA", &sha, "0"]), "1");
    }
    assert_eq!(server.command_calls("evalsha"), 3);
    assert_eq!(server.command_calls("EVALSHA"), 3, "any case");
    assert_eq!(server.command_calls("script|load"), 1);

    server.flush_scripts();
    let error = server
        .try_cli(&["EVALSHA", &sha, "0"])
        .expect_err("EVALSHA after SCRIPT FLUSH");
    assert!(error.contains("NOSCRIPT"), "{error}");

    server.reset_stats();
    assert_eq!(server.command_calls("evalsha"), 0);
}

#[test]
fn dropping_a_server_kills_it_even_when_paused_or_panicking() {
    let mut paused = RedisServer::start();
    let paused_port = paused.port();
    paused.pause();
    drop(paused);
    assert!(!accepts_connections(paused_port));

    let (ports_tx, ports_rx) = std::sync::mpsc::channel();
    let outcome = thread::spawn(move || {
        let server = RedisServer::start();
        ports_tx.send(server.port()).expect("send the port");
        panic!("a test failing while its server runs");
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");
    let port = ports_rx.recv().expect("the thread sent its port");
    assert!(
        !accepts_connections(port),
        "a panicking test's server must be killed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_master_cluster_routes_keys_to_their_masters() {
    let cluster = RedisCluster::start(3, 0);
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.master_indices(), vec![0, 1, 2]);
    for node in cluster.nodes() {
        let info = node.cli(&["CLUSTER", "INFO"]);
        assert!(
            info.contains("cluster_state:ok"),
            "node {}: {info}",
            node.port()
        );
    }

    // Known slots: "a" is 15495, "b" 3300, "c" 7365: one on each master.
    let keys = ["a", "b", "c"];
    let slots: Vec<u16> = keys.iter().map(|key| cluster.key_slot(key)).collect();
    assert_eq!(slots, vec![15_495, 3_300, 7_365]);
    let mut masters: Vec<usize> = keys.iter().map(|key| cluster.master_for_key(key)).collect();
    masters.sort_unstable();
    masters.dedup();
    assert_eq!(masters.len(), 3, "the keys live on three different masters");

    let client = redis::cluster::ClusterClient::new(cluster.urls()).expect("valid cluster URLs");
    let mut con = client
        .get_async_connection()
        .await
        .expect("connect to the cluster");
    for key in keys {
        let () = redis::cmd("SET")
            .arg(key)
            .arg(format!("value of {key}"))
            .query_async(&mut con)
            .await
            .expect("SET through the cluster client");
    }
    for key in keys {
        let value: String = redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("GET through the cluster client");
        assert_eq!(value, format!("value of {key}"));
        let owner = cluster.node(cluster.master_for_key(key));
        assert_eq!(owner.cli(&["GET", key]), value, "stored on its master");
    }
}

#[test]
fn a_cluster_with_replicas_fails_over_when_a_master_dies() {
    let mut cluster = RedisCluster::start(3, 1);
    assert_eq!(cluster.nodes().len(), 6);
    assert_eq!(cluster.master_indices().len(), 3);

    let slot = cluster.key_slot("flux:failover");
    let old_master = cluster.master_for_slot(slot);
    cluster.kill_node(old_master);
    cluster.wait_until_ok(Duration::from_secs(30));
    let new_master = cluster.master_for_slot(slot);
    assert_ne!(new_master, old_master, "a replica took over the slot");

    cluster.restart_node(old_master);
    cluster.wait_until_ok(Duration::from_secs(30));
    assert_eq!(
        cluster.master_for_slot(slot),
        new_master,
        "the old master rejoins as a replica"
    );
}

#[test]
fn restart_waits_until_its_port_is_free_again() {
    let mut server = RedisServer::start();
    let port = server.port();
    server.kill();

    // Something else holds the port for a moment, as a lingering socket would.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the freed port");
    let release = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        drop(squatter);
    });
    server.restart();
    release.join().expect("the squatter thread");

    assert_eq!(server.port(), port);
    assert_eq!(server.cli(&["PING"]), "PONG");
    assert!(
        server.log().contains("Address already in use"),
        "the first attempts met the taken port:\n{}",
        server.log()
    );
}
