//! `flux`: the operator's side of Flux limits at runtime. Reads `FLUX_REDIS_URL` (or
//! `FLUX_REDIS_CLUSTER`) and `FLUX_KEY_PREFIX` as the services do, and
//!
//! - `flux limits` lists the limits the instances registered, with their overrides;
//! - `flux override set NAME RATE|off [--burst N] [--key KEY] [--ttl DURATION]` and
//!   `flux override clear NAME [--key KEY]` change them fleet-wide within a second;
//! - `flux inspect NAME KEY` shows one client's bucket without consuming anything.
//!
//! Output is plain text for people and scripts (documented in the README, "Changing limits
//! at runtime"); errors go to stderr, with exit status 1 (2 for a usage error).

mod output;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use flux::overrides::{Override, Setting};
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
        key: String,
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
        /// For this client key only.
        #[arg(long)]
        key: Option<String>,
        /// Ends by itself after this long: `90s`, `15m`, `2h`, `1d`.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        /// Set it even if no instance registered a limit of that name (yet).
        #[arg(long)]
        force: bool,
    },
    /// Remove an override: the code's limit (or the limit-wide override) applies again.
    Clear {
        /// The limit's name.
        name: String,
        /// The per-key override of this client key.
        #[arg(long)]
        key: Option<String>,
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
            ttl,
            force,
        }) => {
            let declared = declared(&flux, &name, force).await?;
            let setting = setting(&rate, burst, declared.as_ref())?;
            let mut o = Override::new(name, setting);
            if let Some(key) = key {
                o = o.for_key(key);
            }
            if let Some(ttl) = ttl {
                o = o.expires_in(ttl);
            }
            flux.set_override(&o).await.map_err(|e| e.to_string())?;
            Ok(output::set(&o, ttl))
        }
        Command::Override(OverrideCommand::Clear { name, key }) => {
            let removed = flux
                .clear_override(&name, key.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            if !removed {
                declared(&flux, &name, false).await?;
            }
            Ok(output::cleared(&name, key.as_deref(), removed))
        }
        Command::Inspect { name, key } => {
            let declared = declared(&flux, &name, false).await?.ok_or("unreachable")?;
            // The bucket as a check of cost 1 sees it (peek applies the overrides too).
            let limit = Limit::named(name.clone(), declared.rate())
                .with_burst(declared.burst())
                .map_err(|e| e.to_string())?;
            flux.sync_overrides().await.map_err(|e| e.to_string())?;
            let key = Key::new(&key);
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

/// `90s`, `15m`, `2h`, `1d` (also `ms` and `min`).
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let unit_secs = match unit {
        "ms" => return positive(Duration::from_millis(n)),
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?} (s, m, h or d)")),
    };
    positive(Duration::from_secs(n.saturating_mul(unit_secs)))
}

fn positive(ttl: Duration) -> Result<Duration, String> {
    if ttl.is_zero() {
        Err("the TTL must be longer than zero".to_owned())
    } else {
        Ok(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_as_operators_write_them() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_ttl("10").is_err());
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("5y").is_err());
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
