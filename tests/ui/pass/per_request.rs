//! `limit = EXPR` and `cost = EXPR`: a limit per plan, costs computed from the request, in
//! handlers, stacks and plain fns; the handler stays `Send`.

use std::sync::Arc;

use axum::Json;
use flux::{Limit, Rate, RateLimited, rate_limit};

static FREE: Limit = Limit::new("plan-free", Rate::per_minute::<10>());
static PRO: Limit = Limit::new("plan-pro", Rate::per_minute::<100>());

enum Plan {
    Free,
    Pro,
}

impl Plan {
    fn limit(&self) -> &'static Limit {
        match self {
            Plan::Free => &FREE,
            Plan::Pro => &PRO,
        }
    }
}

struct User {
    id: u64,
    plan: Plan,
    custom: Option<Arc<Limit>>,
}

#[derive(serde::Deserialize)]
struct Batch {
    items: Vec<String>,
}

// A `&'static Limit` per plan, the key from the same argument.
#[rate_limit(limit = user.plan.limit(), key = user.id)]
async fn by_plan(user: User) -> String {
    format!("hello {}", user.id)
}

// An owned `Limit` built per request (works, registers its metric handles each time).
#[rate_limit(limit = Limit::named(format!("user-{}", user.id), Rate::per_second::<5>()), key = user.id)]
async fn fresh_limit(user: User) -> String {
    format!("hello {}", user.id)
}

// An `Arc<Limit>`, borrowed from an argument the body still owns.
#[rate_limit(limit = user.custom.clone().unwrap_or_else(|| Arc::new(FREE.clone())), key = user.id)]
async fn shared_limit(user: User) -> String {
    format!("{}", user.custom.is_some())
}

// A cost computed from the body (a usize), with a fixed rate.
#[rate_limit(rate = "100/min", key = "global", cost = batch.items.len())]
async fn batch(Json(batch): Json<Batch>) -> String {
    batch.items.join(",")
}

// Both, stacked with a fixed limit whose literal cost stays checked at compile time.
#[rate_limit(limit = user.plan.limit(), cost = batch.items.len() as u64, key = user.id)]
#[rate_limit(rate = "1000/hour", cost = 2)]
async fn stacked(user: User, Json(batch): Json<Batch>) -> String {
    format!("{} {}", user.id, batch.items.len())
}

// A literal cost with a computed limit: checked per request against its burst.
#[rate_limit(limit = user.plan.limit(), cost = 3, key = user.id)]
async fn literal_cost(user: User) -> String {
    user.id.to_string()
}

// A plain async fn.
#[rate_limit(limit = plan.limit(), cost = rows, key = tenant, deny = "error")]
async fn export(tenant: &str, plan: &Plan, rows: i32) -> Result<String, RateLimited> {
    Ok(format!("{tenant}: {rows}"))
}

fn check<T: std::future::Future + Send>(_: T) {}

/// A value of any type, for calls that only need to type-check (never called).
fn any<T>() -> T {
    unreachable!("only the types matter")
}

fn main() {
    // Type-checked, never run: the injected parameters have no public constructor.
    if std::hint::black_box(false) {
        let user = || User {
            id: 7,
            plan: Plan::Pro,
            custom: None,
        };
        let items = || Batch { items: Vec::new() };
        check(stacked(any(), user(), Json(items())));
        check(by_plan(any(), user()));
        check(fresh_limit(any(), user()));
        check(shared_limit(any(), user()));
        check(literal_cost(any(), user()));
        check(batch(any(), Json(items())));
        check(export("t", &Plan::Free, 3));
    }
}
