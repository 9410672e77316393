use flux::rate_limit;

struct User {
    id: u64,
    name: String,
}

// The limit expression must borrow as a `flux::Limit`.
#[rate_limit(limit = user.name, key = user.id)]
async fn not_a_limit(user: User) -> String {
    user.name
}

// A cost must be an integer.
#[rate_limit(rate = "10/s", cost = user.name.clone(), key = user.id)]
async fn not_an_integer(user: User) -> String {
    user.name
}

fn main() {}
