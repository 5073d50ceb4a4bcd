//! Conversions between the client's types and the generated protobuf types,
//! kept in one place so prost types never leak into the public API.
//!
//! The wire uses milliseconds and 0 for "not set"; the client uses
//! `Duration`, `SystemTime` and `Option`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hermod_proto::v1 as pb;

use crate::message::{Delivery, OutgoingMessage, Priority, PublishReceipt};
use crate::settings::{
    PriorityPolicy, Retention, StartPosition, SubscriptionConfig, SubscriptionInfo, TopicConfig, TopicInfo,
};

/// Whole milliseconds, rounded up so a non-zero duration never becomes the
/// wire's "not set".
pub(crate) fn millis(duration: Duration) -> u64 {
    let ms = duration.as_millis();
    let ms = if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        ms + 1
    } else {
        ms
    };
    u64::try_from(ms).unwrap_or(u64::MAX)
}

pub(crate) fn opt_millis(duration: Option<Duration>) -> u64 {
    duration.map_or(0, millis)
}

/// 0 is "not set".
pub(crate) fn from_millis(ms: u64) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms))
}

pub(crate) fn time_from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub(crate) fn ms_from_time(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, millis)
}

/// 0 is "no limit".
fn nonzero(value: u64) -> Option<u64> {
    (value != 0).then_some(value)
}

pub(crate) fn priority_to_pb(priority: Priority) -> i32 {
    match priority {
        Priority::Low => pb::Priority::Low as i32,
        Priority::Normal => pb::Priority::Normal as i32,
        Priority::High => pb::Priority::High as i32,
        Priority::Critical => pb::Priority::Critical as i32,
    }
}

/// Unspecified and unknown values are normal, as the broker treats them.
pub(crate) fn priority_from_pb(value: i32) -> Priority {
    match pb::Priority::try_from(value) {
        Ok(pb::Priority::Low) => Priority::Low,
        Ok(pb::Priority::High) => Priority::High,
        Ok(pb::Priority::Critical) => Priority::Critical,
        _ => Priority::Normal,
    }
}

pub(crate) fn delivery_to_pb(delivery: Delivery) -> i32 {
    match delivery {
        Delivery::AtMostOnce => pb::DeliveryGuarantee::AtMostOnce as i32,
        Delivery::AtLeastOnce => pb::DeliveryGuarantee::AtLeastOnce as i32,
        Delivery::ExactlyOnce => pb::DeliveryGuarantee::ExactlyOnce as i32,
    }
}

/// Unspecified and unknown values are at-least-once, as the broker treats them.
pub(crate) fn delivery_from_pb(value: i32) -> Delivery {
    match pb::DeliveryGuarantee::try_from(value) {
        Ok(pb::DeliveryGuarantee::AtMostOnce) => Delivery::AtMostOnce,
        Ok(pb::DeliveryGuarantee::ExactlyOnce) => Delivery::ExactlyOnce,
        _ => Delivery::AtLeastOnce,
    }
}

fn retention_to_pb(retention: Retention) -> i32 {
    match retention {
        Retention::Limits => pb::RetentionPolicy::Limits as i32,
        Retention::Interest => pb::RetentionPolicy::Interest as i32,
    }
}

fn retention_from_pb(value: i32) -> Retention {
    match pb::RetentionPolicy::try_from(value) {
        Ok(pb::RetentionPolicy::Interest) => Retention::Interest,
        _ => Retention::Limits,
    }
}

fn priority_policy_to_pb(policy: PriorityPolicy) -> i32 {
    match policy {
        PriorityPolicy::Strict => pb::PriorityPolicy::Strict as i32,
        PriorityPolicy::Weighted => pb::PriorityPolicy::Weighted as i32,
    }
}

fn priority_policy_from_pb(value: i32) -> PriorityPolicy {
    match pb::PriorityPolicy::try_from(value) {
        Ok(pb::PriorityPolicy::Weighted) => PriorityPolicy::Weighted,
        _ => PriorityPolicy::Strict,
    }
}

fn start_to_pb(start: StartPosition) -> pb::StartPosition {
    use pb::start_position::Position;
    let position = match start {
        StartPosition::New => Position::New(true),
        StartPosition::Earliest => Position::Earliest(true),
        StartPosition::Sequence(sequence) => Position::Sequence(sequence),
        StartPosition::Time(time) => Position::TimeMs(ms_from_time(time)),
    };
    pb::StartPosition {
        position: Some(position),
    }
}

fn start_from_pb(start: Option<pb::StartPosition>) -> Option<StartPosition> {
    use pb::start_position::Position;
    Some(match start?.position? {
        Position::New(_) => StartPosition::New,
        Position::Earliest(_) => StartPosition::Earliest,
        Position::Sequence(sequence) => StartPosition::Sequence(sequence),
        Position::TimeMs(ms) => StartPosition::Time(time_from_ms(ms)),
    })
}

/// The wire form of a message. The id is fixed here, once per logical
/// message: every retry sends this same value, so the broker's dedup sees
/// one message however many attempts it takes.
pub(crate) fn prepare_message(message: OutgoingMessage) -> pb::PublishMessage {
    pb::PublishMessage {
        id: message.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        topic: message.topic,
        payload: message.payload,
        headers: message.headers.into_iter().collect(),
        priority: priority_to_pb(message.priority),
        ttl_ms: opt_millis(message.ttl),
        delay_ms: opt_millis(message.delay),
        delivery: delivery_to_pb(message.delivery),
    }
}

pub(crate) fn receipt_from_pb(ack: pb::PublishAck) -> PublishReceipt {
    PublishReceipt {
        id: ack.id,
        topic: ack.topic,
        sequence: ack.sequence,
        duplicate: ack.duplicate,
        publish_time: time_from_ms(ack.publish_time_ms),
    }
}

pub(crate) fn topic_settings_to_pb(config: &TopicConfig) -> pb::TopicSettings {
    pb::TopicSettings {
        retention: config.retention.map_or(0, retention_to_pb),
        max_age_ms: opt_millis(config.max_age),
        max_messages: config.max_messages.unwrap_or(0),
        max_bytes: config.max_bytes.unwrap_or(0),
        default_ttl_ms: opt_millis(config.default_ttl),
        dedup_window_ms: opt_millis(config.dedup_window),
        max_message_bytes: config.max_message_bytes.unwrap_or(0),
    }
}

fn topic_settings_from_pb(settings: pb::TopicSettings) -> TopicConfig {
    TopicConfig {
        retention: Some(retention_from_pb(settings.retention)),
        max_age: from_millis(settings.max_age_ms),
        max_messages: nonzero(settings.max_messages),
        max_bytes: nonzero(settings.max_bytes),
        default_ttl: from_millis(settings.default_ttl_ms),
        dedup_window: from_millis(settings.dedup_window_ms),
        max_message_bytes: nonzero(settings.max_message_bytes),
    }
}

pub(crate) fn topic_info_from_pb(info: pb::TopicInfo) -> TopicInfo {
    TopicInfo {
        name: info.name,
        config: topic_settings_from_pb(info.settings.unwrap_or_default()),
        created_at: time_from_ms(info.created_at_ms),
        first_sequence: info.first_sequence,
        last_sequence: info.last_sequence,
        messages: info.messages,
        bytes: info.bytes,
    }
}

pub(crate) fn subscription_settings_to_pb(config: &SubscriptionConfig) -> pb::SubscriptionSettings {
    pb::SubscriptionSettings {
        pattern: config.pattern.clone(),
        delivery: config.delivery.map_or(0, delivery_to_pb),
        ack_deadline_ms: opt_millis(config.ack_deadline),
        max_deliveries: config.max_deliveries.unwrap_or(0),
        dead_letter_topic: config.dead_letter_topic.clone().unwrap_or_default(),
        start: config.start.map(start_to_pb),
        priority_policy: config.priority_policy.map_or(0, priority_policy_to_pb),
        backoff_initial_ms: opt_millis(config.backoff_initial),
        backoff_max_ms: opt_millis(config.backoff_max),
    }
}

fn subscription_settings_from_pb(settings: pb::SubscriptionSettings) -> SubscriptionConfig {
    SubscriptionConfig {
        pattern: settings.pattern,
        delivery: Some(delivery_from_pb(settings.delivery)),
        ack_deadline: from_millis(settings.ack_deadline_ms),
        max_deliveries: (settings.max_deliveries != 0).then_some(settings.max_deliveries),
        dead_letter_topic: (!settings.dead_letter_topic.is_empty()).then_some(settings.dead_letter_topic),
        start: Some(start_from_pb(settings.start).unwrap_or_default()),
        priority_policy: Some(priority_policy_from_pb(settings.priority_policy)),
        backoff_initial: from_millis(settings.backoff_initial_ms),
        backoff_max: from_millis(settings.backoff_max_ms),
    }
}

pub(crate) fn subscription_info_from_pb(info: pb::SubscriptionInfo) -> SubscriptionInfo {
    SubscriptionInfo {
        name: info.name,
        config: subscription_settings_from_pb(info.settings.unwrap_or_default()),
        created_at: time_from_ms(info.created_at_ms),
        backlog: info.backlog,
        in_flight: info.in_flight,
        consumers: info.consumers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_nanos(1)), 1);
        assert_eq!(millis(Duration::from_millis(250)), 250);
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(from_millis(0), None);
        assert_eq!(from_millis(30_000), Some(Duration::from_secs(30)));
        assert_eq!(ms_from_time(time_from_ms(1_700_000_000_123)), 1_700_000_000_123);
    }

    #[test]
    fn messages_get_an_id_and_wire_values() {
        let message = OutgoingMessage::new("a.b", "hi")
            .priority(Priority::Critical)
            .ttl(Duration::from_secs(30))
            .delivery(Delivery::ExactlyOnce)
            .header("k", "v");
        let wire = prepare_message(message);
        assert_eq!(wire.id.len(), 36);
        assert_eq!(uuid::Uuid::parse_str(&wire.id).unwrap().get_version_num(), 7);
        assert_eq!(wire.priority, pb::Priority::Critical as i32);
        assert_eq!(wire.delivery, pb::DeliveryGuarantee::ExactlyOnce as i32);
        assert_eq!(wire.ttl_ms, 30_000);
        assert_eq!(wire.delay_ms, 0);
        assert_eq!(wire.headers["k"], "v");
        let wire = prepare_message(OutgoingMessage::new("a.b", "hi").id("mine"));
        assert_eq!(wire.id, "mine");
    }

    #[test]
    fn enums_round_trip_and_unknown_values_take_the_broker_default() {
        for priority in Priority::ALL {
            assert_eq!(priority_from_pb(priority_to_pb(priority)), priority);
        }
        for delivery in Delivery::ALL {
            assert_eq!(delivery_from_pb(delivery_to_pb(delivery)), delivery);
        }
        assert_eq!(priority_from_pb(0), Priority::Normal);
        assert_eq!(priority_from_pb(99), Priority::Normal);
        assert_eq!(delivery_from_pb(0), Delivery::AtLeastOnce);
    }

    #[test]
    fn settings_round_trip() {
        let topic = TopicConfig::new()
            .retention(Retention::Interest)
            .max_age(Duration::from_secs(3600))
            .max_messages(10)
            .max_bytes(1 << 20)
            .default_ttl(Duration::from_secs(60))
            .dedup_window(Duration::from_secs(120))
            .max_message_bytes(1024);
        assert_eq!(topic_settings_from_pb(topic_settings_to_pb(&topic)), topic);
        assert_eq!(
            topic_settings_to_pb(&TopicConfig::new()),
            pb::TopicSettings::default()
        );

        let time = time_from_ms(1_700_000_000_000);
        for start in [
            StartPosition::New,
            StartPosition::Earliest,
            StartPosition::Sequence(42),
            StartPosition::Time(time),
        ] {
            let subscription = SubscriptionConfig::new("orders.>")
                .delivery(Delivery::ExactlyOnce)
                .ack_deadline(Duration::from_secs(10))
                .max_deliveries(5)
                .dead_letter_topic("dead.orders")
                .start(start)
                .priority_policy(PriorityPolicy::Weighted)
                .backoff(Duration::from_secs(1), Duration::from_secs(60));
            let wire = subscription_settings_to_pb(&subscription);
            assert_eq!(subscription_settings_from_pb(wire), subscription);
        }
        let unset = subscription_settings_to_pb(&SubscriptionConfig::new("a"));
        assert_eq!(unset.start, None);
        assert_eq!(unset.delivery, 0);
    }
}
