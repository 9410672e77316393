//! The hot-key deny cache: a flood from one client reaches Redis about once per retry window
//! per instance, and admits exactly as much as without the cache.

use std::time::Duration;

use flux::Flux;

use crate::support::{self, RedisServer, assert_cache_effect, flood, flood_limit};

async fn flood_on(server: &RedisServer, cache: bool, run_for: Duration) -> support::Flood {
    let flux = Flux::builder()
        .redis(server.url())
        .key_prefix(if cache { "with-cache" } else { "without-cache" })
        .deadline(Duration::from_secs(5))
        .deny_cache(cache)
        .build()
        .expect("valid configuration");
    // Connect and load the script before counting.
    assert!(flux.check("warm-up", &flood_limit()).await.allowed);
    server.reset_stats();
    let mut f = flood(&flux, "attacker", run_for).await;
    f.redis_calls = server.command_calls("evalsha") + server.command_calls("eval");
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_key_flood_costs_a_handful_of_redis_calls_per_window_and_admits_the_same() {
    let server = RedisServer::start();
    let run_for = Duration::from_secs(2);
    let with = flood_on(&server, true, run_for).await;
    let without = flood_on(&server, false, run_for).await;
    assert_cache_effect(&with, &without);
}
