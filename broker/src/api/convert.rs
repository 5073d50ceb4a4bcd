//! Conversions between the wire types of `hermod.v1` and the broker's domain,
//! validating every field on the way in. Prost types stop here.

use hermod_proto::v1 as pb;

use crate::domain::limits::{MAX_DELAY_MS, MAX_TTL_MS};
use crate::domain::{
    DeliveryGuarantee, Message, MessageId, NewMessage, Pattern, Priority, PriorityPolicy, RetentionPolicy,
    StartPosition, SubscriptionSettings, TopicName, TopicSettings, ValidationError, validate_headers,
};
use crate::engine::Delivery;
use crate::error::BrokerError;
use crate::state::{Published, SubscriptionRecord, TopicRecord};

pub fn priority_in(value: i32) -> Priority {
    match pb::Priority::try_from(value).unwrap_or(pb::Priority::Normal) {
        pb::Priority::Low => Priority::Low,
        pb::Priority::High => Priority::High,
        pb::Priority::Critical => Priority::Critical,
        pb::Priority::Normal | pb::Priority::Unspecified => Priority::Normal,
    }
}

pub fn priority_out(priority: Priority) -> i32 {
    (match priority {
        Priority::Low => pb::Priority::Low,
        Priority::Normal => pb::Priority::Normal,
        Priority::High => pb::Priority::High,
        Priority::Critical => pb::Priority::Critical,
    }) as i32
}

fn checked_enum<T: TryFrom<i32>>(field: &str, value: i32) -> Result<T, ValidationError> {
    T::try_from(value).map_err(|_| ValidationError::new(field, format!("{value} is not a known value")))
}

pub fn delivery_in(field: &str, value: i32) -> Result<DeliveryGuarantee, ValidationError> {
    Ok(match checked_enum::<pb::DeliveryGuarantee>(field, value)? {
        pb::DeliveryGuarantee::AtMostOnce => DeliveryGuarantee::AtMostOnce,
        pb::DeliveryGuarantee::ExactlyOnce => DeliveryGuarantee::ExactlyOnce,
        pb::DeliveryGuarantee::AtLeastOnce | pb::DeliveryGuarantee::Unspecified => {
            DeliveryGuarantee::AtLeastOnce
        }
    })
}

pub fn delivery_out(delivery: DeliveryGuarantee) -> i32 {
    (match delivery {
        DeliveryGuarantee::AtMostOnce => pb::DeliveryGuarantee::AtMostOnce,
        DeliveryGuarantee::AtLeastOnce => pb::DeliveryGuarantee::AtLeastOnce,
        DeliveryGuarantee::ExactlyOnce => pb::DeliveryGuarantee::ExactlyOnce,
    }) as i32
}

fn optional_range(field: &str, value: u64, max: u64) -> Result<Option<u64>, ValidationError> {
    match value {
        0 => Ok(None),
        v if v > max => Err(ValidationError::new(
            field,
            format!("{v} ms is more than the allowed {max} ms"),
        )),
        v => Ok(Some(v)),
    }
}

/// Validates one message of a publish; `prefix` is e.g. `messages[3]`.
pub fn message_in(prefix: &str, m: pb::PublishMessage) -> Result<NewMessage, ValidationError> {
    // Fields are named relative to the message and prefixed only on error:
    // formatting every field's full name cost more than validating it.
    message_fields(m).map_err(|mut e| {
        e.field = format!("{prefix}.{}", e.field);
        e
    })
}

fn message_fields(m: pb::PublishMessage) -> Result<NewMessage, ValidationError> {
    let priority = checked_enum::<pb::Priority>("priority", m.priority)?;
    let headers = m.headers.into_iter().collect();
    validate_headers("headers", &headers)?;
    Ok(NewMessage {
        id: MessageId::parse_or_generate("id", &m.id)?,
        topic: TopicName::parse("topic", &m.topic)?,
        payload: m.payload,
        headers,
        priority: priority_in(priority as i32),
        ttl_ms: optional_range("ttl_ms", m.ttl_ms, MAX_TTL_MS)?,
        delay_ms: optional_range("delay_ms", m.delay_ms, MAX_DELAY_MS)?.unwrap_or(0),
        delivery: delivery_in("delivery", m.delivery)?,
    })
}

pub fn publish_result(result: Result<Published, BrokerError>) -> pb::PublishResult {
    publish_outcome(result, true)
}

/// A publish result, with the message's id and topic in an ack or not (a
/// publish stream's caller knows them by correlation id).
pub fn publish_outcome(result: Result<Published, BrokerError>, names: bool) -> pb::PublishResult {
    let outcome = match result {
        Ok(p) => pb::publish_result::Outcome::Ack(pb::PublishAck {
            id: if names { p.id.to_string() } else { String::new() },
            topic: if names { p.topic.to_string() } else { String::new() },
            sequence: p.sequence,
            duplicate: p.duplicate,
            publish_time_ms: p.publish_time_ms,
        }),
        Err(e) => pb::publish_result::Outcome::Error(item_error(e)),
    };
    pb::PublishResult {
        outcome: Some(outcome),
    }
}

/// A per-item error: the code, the message, and the field it names.
pub fn item_error(error: BrokerError) -> pb::ItemError {
    let field = match &error {
        BrokerError::Invalid(v) => v.field.clone(),
        other => other
            .to_string()
            .split_once(':')
            .map(|(f, _)| f.to_string())
            .unwrap_or_default(),
    };
    let status = tonic::Status::from(error);
    pb::ItemError {
        code: status.code() as i32,
        message: status.message().to_string(),
        field,
    }
}

pub fn delivered(delivery: &Delivery) -> pb::DeliveredMessage {
    let m: &Message = &delivery.message;
    pb::DeliveredMessage {
        id: m.id.to_string(),
        topic: m.topic.to_string(),
        payload: m.payload.clone(),
        headers: m.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        priority: priority_out(m.priority),
        sequence: m.sequence,
        publish_time_ms: m.publish_time_ms,
        attempt: delivery.attempt,
        ack_token: delivery.ack_token.clone().unwrap_or_default(),
        expires_at_ms: m.expires_at_ms.unwrap_or(0),
        delivery: delivery_out(delivery.delivery),
    }
}

/// Topic settings from the wire; zero fields take the defaults.
pub fn topic_settings_in(s: Option<pb::TopicSettings>) -> Result<TopicSettings, ValidationError> {
    let s = s.unwrap_or_default();
    let defaults = TopicSettings::default();
    let retention = match checked_enum::<pb::RetentionPolicy>("settings.retention", s.retention)? {
        pb::RetentionPolicy::Interest => RetentionPolicy::Interest,
        _ => RetentionPolicy::Limits,
    };
    let pick = |v: u64, d: u64| if v == 0 { d } else { v };
    let settings = TopicSettings {
        retention,
        max_age_ms: pick(s.max_age_ms, defaults.max_age_ms),
        max_messages: s.max_messages,
        max_bytes: s.max_bytes,
        default_ttl_ms: (s.default_ttl_ms != 0).then_some(s.default_ttl_ms),
        dedup_window_ms: pick(s.dedup_window_ms, defaults.dedup_window_ms),
        max_message_bytes: pick(s.max_message_bytes, defaults.max_message_bytes),
    };
    settings.validate("settings")?;
    Ok(settings)
}

pub fn topic_out(t: TopicRecord) -> pb::TopicInfo {
    let s = &t.settings;
    pb::TopicInfo {
        name: t.name.to_string(),
        settings: Some(pb::TopicSettings {
            retention: match s.retention {
                RetentionPolicy::Limits => pb::RetentionPolicy::Limits,
                RetentionPolicy::Interest => pb::RetentionPolicy::Interest,
            } as i32,
            max_age_ms: s.max_age_ms,
            max_messages: s.max_messages,
            max_bytes: s.max_bytes,
            default_ttl_ms: s.default_ttl_ms.unwrap_or(0),
            dedup_window_ms: s.dedup_window_ms,
            max_message_bytes: s.max_message_bytes,
        }),
        created_at_ms: t.created_at_ms,
        first_sequence: t.first_sequence,
        last_sequence: t.last_sequence(),
        messages: t.messages,
        bytes: t.bytes,
    }
}

/// Subscription settings from the wire; zero fields take the defaults.
pub fn subscription_settings_in(
    s: Option<pb::SubscriptionSettings>,
) -> Result<SubscriptionSettings, ValidationError> {
    let s = s.ok_or_else(|| ValidationError::new("settings", "required (at least the pattern)"))?;
    let mut settings = SubscriptionSettings::new(Pattern::parse("settings.pattern", &s.pattern)?);
    settings.delivery = delivery_in("settings.delivery", s.delivery)?;
    if s.ack_deadline_ms != 0 {
        settings.ack_deadline_ms = s.ack_deadline_ms;
    }
    if s.max_deliveries != 0 {
        settings.max_deliveries = s.max_deliveries;
    }
    if !s.dead_letter_topic.is_empty() {
        settings.dead_letter_topic = Some(TopicName::parse(
            "settings.dead_letter_topic",
            &s.dead_letter_topic,
        )?);
    }
    settings.start = match s.start.and_then(|p| p.position) {
        None | Some(pb::start_position::Position::New(_)) => StartPosition::New,
        Some(pb::start_position::Position::Earliest(_)) => StartPosition::Earliest,
        Some(pb::start_position::Position::Sequence(n)) => StartPosition::Sequence(n),
        Some(pb::start_position::Position::TimeMs(t)) => StartPosition::Time(t),
    };
    settings.priority_policy =
        match checked_enum::<pb::PriorityPolicy>("settings.priority_policy", s.priority_policy)? {
            pb::PriorityPolicy::Weighted => PriorityPolicy::Weighted,
            _ => PriorityPolicy::Strict,
        };
    if s.backoff_initial_ms != 0 {
        settings.backoff_initial_ms = s.backoff_initial_ms;
    }
    if s.backoff_max_ms != 0 {
        settings.backoff_max_ms = s.backoff_max_ms;
    }
    settings.validate("settings")?;
    Ok(settings)
}

pub fn subscription_out(
    r: SubscriptionRecord,
    stats: crate::engine::SubscriptionStats,
) -> pb::SubscriptionInfo {
    let s = &r.settings;
    let start = match s.start {
        StartPosition::New => pb::start_position::Position::New(true),
        StartPosition::Earliest => pb::start_position::Position::Earliest(true),
        StartPosition::Sequence(n) => pb::start_position::Position::Sequence(n),
        StartPosition::Time(t) => pb::start_position::Position::TimeMs(t),
    };
    pb::SubscriptionInfo {
        name: r.name.to_string(),
        settings: Some(pb::SubscriptionSettings {
            pattern: s.pattern.to_string(),
            delivery: delivery_out(s.delivery),
            ack_deadline_ms: s.ack_deadline_ms,
            max_deliveries: s.max_deliveries,
            dead_letter_topic: s
                .dead_letter_topic
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default(),
            start: Some(pb::StartPosition {
                position: Some(start),
            }),
            priority_policy: match s.priority_policy {
                PriorityPolicy::Strict => pb::PriorityPolicy::Strict,
                PriorityPolicy::Weighted => pb::PriorityPolicy::Weighted,
            } as i32,
            backoff_initial_ms: s.backoff_initial_ms,
            backoff_max_ms: s.backoff_max_ms,
        }),
        created_at_ms: r.created_at_ms,
        backlog: stats.backlog,
        in_flight: stats.in_flight,
        consumers: stats.consumers,
    }
}

/// Optional durations given in milliseconds, 0 meaning "not set".
pub fn optional_ms(value: u64) -> Option<u64> {
    (value != 0).then_some(value)
}
