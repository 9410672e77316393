//! `flux`: the operator's side of Flux limits at runtime. Reads `FLUX_REDIS_URL` (or
//! `FLUX_REDIS_CLUSTER`) and `FLUX_KEY_PREFIX` as the services do, and
//!
//! - `flux limits` lists the limits the instances registered, with their overrides;
//! - `flux override set NAME RATE|off [--burst N] [--key KEY] [--ttl DURATION]` and
//!   `flux override clear NAME [--key KEY]` change them fleet-wide within a second;
//! - `flux inspect NAME KEY` shows one client's bucket without consuming anything.
//!
//! A `--key` (and `inspect`'s KEY) that reads as an IP address is taken as requests of
//! `key = "ip"` take the client's address: IPv6 grouped by its /64, an IPv4-mapped address
//! as IPv4 (`--raw-key` takes it verbatim, for a header value that looks like an address).
//!
//! Output is plain text for people and scripts (documented in the README, "Changing limits
//! at runtime"); errors go to stderr, with exit status 1 (2 for a usage error).

mod output;

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use flux::overrides::{MAX_TTL, Override, Setting};
use flux::{Builder, Flux, Key, Limit, Rate};

/// List, override and inspect the rate limits of a running Flux fleet.
#[derive(Parser)]
#[command(name = "flux", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every limit the instances registered: name, rate, burst, cost and override.
    Limits,
    /// Change or clear a limit for the whole fleet.
    #[command(subcommand)]
    Override(OverrideCommand),
    /// One client's bucket: tokens left and time until full, consuming nothing.
    Inspect {
        /// The limit's name (as `flux limits` shows it).
        name: String,
        /// The client key (what the limit's `key =` yields: an address, a header value...).
        /// An IP address is grouped as requests' addresses are: IPv6 by its /64.
        key: String,
        /// Take KEY verbatim, even when it reads as an IP address.
        #[arg(long)]
        raw_key: bool,
    },
}

#[derive(Subcommand)]
enum OverrideCommand {
    /// Put a rate (e.g. 3/s, 100/min) or `off` in force for a limit.
    Set {
        /// The limit's name.
        name: String,
        /// The new rate, such as `3/s` or `500/min`, or `off` for no limit.
        rate: String,
        /// Bucket capacity (default: the rate's count).
        #[arg(long)]
        burst: Option<u32>,
        /// For this client key only. An IP address is grouped as requests' addresses are
        /// (IPv6 by its /64, IPv4-mapped as IPv4), so the override meets `key = "ip"`.
        #[arg(long)]
        key: Option<String>,
        /// Take --key verbatim, even when it reads as an IP address (a header's value).
        #[arg(long, requires = "key")]
        raw_key: bool,
        /// Ends by itself after this long: `90s`, `15m`, `2h`, `1d` (at most `365d`).
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Ttl>,
        /// Set it even if no instance registered a limit of that name (yet).
        #[arg(long)]
        force: bool,
    },
    /// Remove an override: the code's limit (or the limit-wide override) applies again.
    Clear {
        /// The limit's name.
        name: String,
        /// The per-key override of this client key (an IP address grouped as for `set`).
        #[arg(long)]
        key: Option<String>,
        /// Take --key verbatim, even when it reads as an IP address.
        #[arg(long, requires = "key")]
        raw_key: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    match runtime.block_on(run(cli.command)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("flux: {message}");
    ExitCode::FAILURE
}

async fn run(command: Command) -> Result<String, String> {
    check(&command)?;
    let flux = connect().await?;
    match command {
        Command::Limits => {
            let limits = flux.registered_limits().await.map_err(|e| e.to_string())?;
            let overrides = flux.overrides().await.map_err(|e| e.to_string())?;
            Ok(output::limits(&limits, &overrides))
        }
        Command::Override(OverrideCommand::Set {
            name,
            rate,
            burst,
            key,
            raw_key,
            ttl,
            force,
        }) => {
            let declared = declared(&flux, &name, force).await?;
            let setting = setting(&rate, burst, declared.as_ref())?;
            let mut o = Override::new(name, setting);
            if let Some(key) = key {
                o = o.for_key(client_key(&key, raw_key));
            }
            let ttl = ttl.as_ref().map(Ttl::within).transpose()?;
            if let Some(ttl) = ttl {
                o = o.expires_in(ttl);
            }
            flux.set_override(&o).await.map_err(|e| e.to_string())?;
            Ok(output::set(&o, ttl))
        }
        Command::Override(OverrideCommand::Clear { name, key, raw_key }) => {
            let key = key.map(|k| client_key(&k, raw_key).as_str().to_owned());
            let removed = flux
                .clear_override(&name, key.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            if !removed {
                declared(&flux, &name, false).await?;
            }
            Ok(output::cleared(&name, key.as_deref(), removed))
        }
        Command::Inspect { name, key, raw_key } => {
            let declared = declared(&flux, &name, false).await?.ok_or("unreachable")?;
            // The bucket as a check of cost 1 sees it (peek applies the overrides too).
            let limit = Limit::named(name.clone(), declared.rate())
                .with_burst(declared.burst())
                .map_err(|e| e.to_string())?;
            flux.sync_overrides().await.map_err(|e| e.to_string())?;
            let key = client_key(&key, raw_key);
            let decision = flux
                .peek(&key, std::slice::from_ref(&limit))
                .await
                .map_err(|e| e.to_string())?;
            let overrides = flux.overrides().await.map_err(|e| e.to_string())?;
            // Per-key overrides are listed by the client's digest.
            let stored = flux.stored_key(&key);
            let in_force = overrides
                .iter()
                .filter(|o| o.limit == name)
                .filter(|o| o.key.is_none() || o.key.as_deref() == Some(stored.as_str()))
                .max_by_key(|o| o.key.is_some());
            Ok(output::inspect(&declared, &key, &decision, in_force))
        }
    }
}

/// Refuses, before anything is read or stored, what the arguments cannot mean: an override
/// of a name with `@` (it would be stored as another limit's per-key override), a TTL past
/// the maximum.
fn check(command: &Command) -> Result<(), String> {
    let (name, ttl) = match command {
        Command::Override(OverrideCommand::Set { name, ttl, .. }) => (name, ttl.as_ref()),
        Command::Override(OverrideCommand::Clear { name, .. }) => (name, None),
        Command::Limits | Command::Inspect { .. } => return Ok(()),
    };
    if name.contains('@') {
        return Err(format!(
            "limit name {name:?} contains '@': overrides are stored as NAME@KEY (split at the \
             first '@'), so a limit whose name has '@' cannot be overridden"
        ));
    }
    ttl.map(Ttl::within).transpose().map(drop)
}

/// The client key `key` names, as requests make it: an IP address (unless `raw`) grouped
/// as `key = "ip"` groups the client's address (IPv6 by its /64, IPv4-mapped as IPv4).
fn client_key(key: &str, raw: bool) -> Key {
    match key.parse::<IpAddr>() {
        Ok(ip) if !raw => Key::from_ip(ip),
        _ => Key::new(key),
    }
}

/// The limiter of the environment's Redis, checked to answer.
async fn connect() -> Result<Flux, String> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !set("FLUX_REDIS_URL") && !set("FLUX_REDIS_CLUSTER") {
        return Err("set FLUX_REDIS_URL (or FLUX_REDIS_CLUSTER) to the fleet's Redis".to_owned());
    }
    let flux = Builder::from_env()
        .and_then(Builder::build)
        .map_err(|e| e.to_string())?;
    flux.ping(Duration::from_secs(2))
        .await
        .map_err(|e| format!("Redis unreachable ({}): {e}", flux.describe()))?;
    Ok(flux)
}

/// The registered limit `name`; an error naming it when there is none, unless `force`.
async fn declared(flux: &Flux, name: &str, force: bool) -> Result<Option<Limit>, String> {
    let limits = flux.registered_limits().await.map_err(|e| e.to_string())?;
    match limits.into_iter().find(|l| l.name() == name) {
        Some(limit) => Ok(Some(limit)),
        None if force => Ok(None),
        None => Err(format!(
            "unknown limit {name:?}: no instance registered it (see `flux limits`; a limit \
             registers on its first check, or use --force)"
        )),
    }
}

/// The setting `rate` and `burst` name, checked against the limit's cost.
fn setting(rate: &str, burst: Option<u32>, declared: Option<&Limit>) -> Result<Setting, String> {
    if rate.eq_ignore_ascii_case("off") {
        return match burst {
            Some(_) => Err("`off` takes no --burst".to_owned()),
            None => Ok(Setting::Off),
        };
    }
    let rate: Rate = rate
        .parse()
        .map_err(|e| format!("bad rate {rate:?}: {e}"))?;
    let burst = burst.unwrap_or(rate.count());
    let cost = declared.map_or(1, Limit::cost);
    Limit::named("", rate)
        .with_burst(burst)
        .and_then(|l| l.with_cost(cost))
        .map_err(|e| format!("bad limit {rate} burst={burst}: {e}"))?;
    Ok(Setting::Limited { rate, burst })
}

/// A `--ttl` as written: its duration, or `None` when it is longer than a `u64` of
/// milliseconds holds. Its syntax is checked by clap ([`parse_ttl`]); its range by
/// [`Ttl::within`], as the tool's own error (`flux: ...`, exit status 1).
#[derive(Clone, Debug, PartialEq)]
struct Ttl {
    text: String,
    millis: Option<u64>,
}

impl Ttl {
    /// The duration, at most [`MAX_TTL`].
    fn within(&self) -> Result<Duration, String> {
        self.millis
            .map(Duration::from_millis)
            .filter(|ttl| *ttl <= MAX_TTL)
            .ok_or_else(|| {
                format!(
                    "--ttl {}: longer than {}d, the longest an override may last (without \
                     --ttl it lasts until cleared)",
                    self.text,
                    MAX_TTL.as_secs() / 86_400
                )
            })
    }
}

/// `90s`, `15m`, `2h`, `1d` (also `ms` and `min`).
fn parse_ttl(text: &str) -> Result<Ttl, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("{text:?} does not start with a whole number"));
    }
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown unit {other:?} (s, m, h or d)")),
    };
    if number.bytes().all(|b| b == b'0') {
        return Err("the TTL must be longer than zero".to_owned());
    }
    // Digits only: a number that does not fit is too long, not malformed.
    let millis = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms));
    Ok(Ttl {
        text: text.to_owned(),
        millis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttl(text: &str) -> Result<Duration, String> {
        parse_ttl(text)?.within()
    }

    #[test]
    fn ttls_read_as_operators_write_them() {
        assert_eq!(ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(ttl("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(ttl("365d"), Ok(MAX_TTL));
        assert!(parse_ttl("10").is_err());
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("5y").is_err());
        assert!(parse_ttl("s").is_err());
    }

    #[test]
    fn ttls_past_the_maximum_are_refused_not_saturated() {
        for text in [
            "366d",
            "8761h",
            "99999999999999d",
            "18446744073709551615ms",
            "99999999999999999999999999s",
        ] {
            let e = ttl(text).expect_err(text);
            assert!(e.contains("longer than 365d"), "{text}: {e}");
        }
    }

    #[test]
    fn keys_that_read_as_addresses_are_grouped_as_requests_group_them() {
        let ip = |text: &str| Key::from_ip(text.parse().expect("an address"));
        assert_eq!(client_key("2001:db8::1", false), ip("2001:db8::ffff"));
        assert_eq!(client_key("2001:db8::1", false).as_str(), "2001:db8::/64");
        assert_eq!(client_key("::ffff:192.0.2.1", false).as_str(), "192.0.2.1");
        assert_eq!(client_key("2001:db8::1", true).as_str(), "2001:db8::1");
        assert_eq!(client_key("customer-42", false).as_str(), "customer-42");
    }

    #[test]
    fn settings_are_checked_before_anything_is_stored() {
        assert_eq!(setting("off", None, None), Ok(Setting::Off));
        assert!(setting("off", Some(3), None).is_err());
        assert!(
            setting("fast", None, None)
                .unwrap_err()
                .contains("bad rate")
        );
        let costly = Limit::named("x", Rate::per_second::<10>())
            .with_cost(5)
            .expect("valid");
        assert!(setting("3/s", None, Some(&costly)).is_err());
    }
}
