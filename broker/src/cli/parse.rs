//! Parsers for flag values: durations, sizes, headers, start positions, and
//! the enums the flags accept.

use std::time::Duration;

use hermod_client::{Delivery, Priority, PriorityPolicy, Retention, StartPosition};

/// `30s`, `5m`, `250ms`, `1h30m` (humantime's syntax).
pub fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|e| format!("{value:?} is not a duration like 30s, 5m or 250ms: {e}"))
}

/// A byte count: `1048576`, `512KiB`, `1MiB`, `2GB` (KB/MB/GB are powers of
/// 1000, KiB/MiB/GiB powers of 1024; case does not matter).
pub fn bytes(value: &str) -> Result<u64, String> {
    let text = value.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a size like 1048576, 512KiB or 1MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "{value:?}: unknown unit {other:?}; use B, KB, MB, GB, KiB, MiB or GiB"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{value:?} is too large"))
}

/// A header as `name=value` (the value may be empty and may hold `=`).
pub fn header(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{value:?} is not a header like name=value")),
    }
}

/// `new`, `earliest`, `seq:N` or `time:RFC3339` (UTC, e.g. `time:2025-01-31T12:00:00Z`).
pub fn start(value: &str) -> Result<StartPosition, String> {
    match value.split_once(':') {
        None if value == "new" => Ok(StartPosition::New),
        None if value == "earliest" => Ok(StartPosition::Earliest),
        Some(("seq", sequence)) => sequence
            .parse()
            .map(StartPosition::Sequence)
            .map_err(|_| format!("{value:?}: {sequence:?} is not a sequence number")),
        Some(("time", time)) => humantime::parse_rfc3339_weak(time)
            .map(StartPosition::Time)
            .map_err(|e| {
                format!("{value:?}: {time:?} is not an RFC 3339 time like 2025-01-31T12:00:00Z: {e}")
            }),
        _ => Err(format!(
            "{value:?} is not one of new, earliest, seq:N, time:RFC3339"
        )),
    }
}

/// `--priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PriorityArg {
    Low,
    Normal,
    High,
    Critical,
}

impl From<PriorityArg> for Priority {
    fn from(value: PriorityArg) -> Self {
        match value {
            PriorityArg::Low => Priority::Low,
            PriorityArg::Normal => Priority::Normal,
            PriorityArg::High => Priority::High,
            PriorityArg::Critical => Priority::Critical,
        }
    }
}

/// `--delivery` of a message. The variant names are the flag's values
/// (`at-most-once`, ...), hence the shared suffix.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeliveryArg {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

impl From<DeliveryArg> for Delivery {
    fn from(value: DeliveryArg) -> Self {
        match value {
            DeliveryArg::AtMostOnce => Delivery::AtMostOnce,
            DeliveryArg::AtLeastOnce => Delivery::AtLeastOnce,
            DeliveryArg::ExactlyOnce => Delivery::ExactlyOnce,
        }
    }
}

/// `--delivery` of a durable subscription: at-most-once is what ephemeral
/// subscriptions are for.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SubscriptionDeliveryArg {
    AtLeastOnce,
    ExactlyOnce,
}

impl From<SubscriptionDeliveryArg> for Delivery {
    fn from(value: SubscriptionDeliveryArg) -> Self {
        match value {
            SubscriptionDeliveryArg::AtLeastOnce => Delivery::AtLeastOnce,
            SubscriptionDeliveryArg::ExactlyOnce => Delivery::ExactlyOnce,
        }
    }
}

/// `--retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RetentionArg {
    Limits,
    Interest,
}

impl From<RetentionArg> for Retention {
    fn from(value: RetentionArg) -> Self {
        match value {
            RetentionArg::Limits => Retention::Limits,
            RetentionArg::Interest => Retention::Interest,
        }
    }
}

/// `--priority-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PriorityPolicyArg {
    Strict,
    Weighted,
}

impl From<PriorityPolicyArg> for PriorityPolicy {
    fn from(value: PriorityPolicyArg) -> Self {
        match value {
            PriorityPolicyArg::Strict => PriorityPolicy::Strict,
            PriorityPolicyArg::Weighted => PriorityPolicy::Weighted,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn durations_parse_like_humans_write_them() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("2d"), Ok(Duration::from_secs(2 * 86400)));
        for bad in ["", "30", "soon", "-5s", "5 parsecs"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(bytes("1048576"), Ok(1 << 20));
        assert_eq!(bytes("1MiB"), Ok(1 << 20));
        assert_eq!(bytes("512kib"), Ok(512 << 10));
        assert_eq!(bytes("2MB"), Ok(2_000_000));
        assert_eq!(bytes("16 MiB"), Ok(16 << 20));
        assert!(bytes("1.5MiB").is_err());
        assert!(bytes("MiB").is_err());
        assert!(bytes("3 parsecs").is_err());
        assert!(bytes("99999999999999GiB").is_err());
    }

    #[test]
    fn headers_split_at_the_first_equals_sign() {
        assert_eq!(header("k=v"), Ok(("k".into(), "v".into())));
        assert_eq!(header("k=a=b"), Ok(("k".into(), "a=b".into())));
        assert_eq!(header("k="), Ok(("k".into(), String::new())));
        assert!(header("=v").is_err());
        assert!(header("novalue").is_err());
    }

    #[test]
    fn start_positions_parse() {
        assert_eq!(start("new"), Ok(StartPosition::New));
        assert_eq!(start("earliest"), Ok(StartPosition::Earliest));
        assert_eq!(start("seq:42"), Ok(StartPosition::Sequence(42)));
        let Ok(StartPosition::Time(time)) = start("time:2025-01-31T12:00:00Z") else {
            panic!()
        };
        assert_eq!(time.duration_since(UNIX_EPOCH).unwrap().as_secs(), 1_738_324_800);
        for bad in ["", "latest", "seq:", "seq:x", "time:yesterday", "seq"] {
            assert!(start(bad).is_err(), "{bad}");
        }
    }
}
