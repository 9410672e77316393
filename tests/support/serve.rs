//! An axum router served over real TCP, on a free loopback port, by the test's runtime.

use std::net::SocketAddr;

/// Serves `app` (with the peer address that `key = "ip"` reads) on `127.0.0.1:0` until the
/// test's runtime ends; returns the address to connect to.
pub(crate) async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });
    addr
}
