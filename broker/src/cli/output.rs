//! What the client commands print: one JSON object per line with `--json`,
//! short human lines otherwise.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use base64::Engine;
use hermod_client::{PublishReceipt, ReceivedMessage, StartPosition, SubscriptionInfo, TopicInfo};
use serde_json::{Value, json};

/// Prints to stdout in the chosen format.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints the JSON object, or the human text.
    pub fn emit(&self, value: &Value, human: impl FnOnce() -> String) -> std::io::Result<()> {
        let line = if self.json { value.to_string() } else { human() };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        // Flushed per line so `hermod sub | ...` sees each message at once.
        stdout.flush()
    }
}

/// The parts of a delivered message the CLI shows.
#[derive(Debug, Clone)]
pub struct MessageView<'a> {
    pub id: &'a str,
    pub topic: &'a str,
    pub sequence: u64,
    pub priority: &'a str,
    pub attempt: u32,
    pub delivery: &'a str,
    pub headers: &'a BTreeMap<String, String>,
    pub payload: &'a [u8],
}

impl<'a> From<&'a ReceivedMessage> for MessageView<'a> {
    fn from(message: &'a ReceivedMessage) -> Self {
        Self {
            id: &message.id,
            topic: &message.topic,
            sequence: message.sequence,
            priority: message.priority.as_str(),
            attempt: message.attempt,
            delivery: message.delivery.as_str(),
            headers: &message.headers,
            payload: &message.payload,
        }
    }
}

/// A message as JSON: the payload as text under `payload` when it is UTF-8,
/// otherwise base64 under `payload_base64`.
pub fn message_json(message: &MessageView<'_>) -> Value {
    let mut value = json!({
        "id": message.id,
        "topic": message.topic,
        "sequence": message.sequence,
        "priority": message.priority,
        "attempt": message.attempt,
        "delivery": message.delivery,
        "headers": message.headers,
    });
    let object = value.as_object_mut().expect("a JSON object");
    match std::str::from_utf8(message.payload) {
        Ok(text) => object.insert("payload".into(), text.into()),
        Err(_) => object.insert(
            "payload_base64".into(),
            base64::engine::general_purpose::STANDARD
                .encode(message.payload)
                .into(),
        ),
    };
    value
}

/// `orders.eu #42 [high, attempt 2] k=v: payload`
pub fn message_human(message: &MessageView<'_>) -> String {
    let mut line = format!("{} #{} [{}", message.topic, message.sequence, message.priority);
    if message.attempt > 1 {
        line.push_str(&format!(", attempt {}", message.attempt));
    }
    line.push(']');
    for (name, value) in message.headers {
        line.push_str(&format!(" {name}={value}"));
    }
    match std::str::from_utf8(message.payload) {
        Ok(text) => line.push_str(&format!(": {text}")),
        Err(_) => line.push_str(&format!(
            ": <{} bytes, base64 {}>",
            message.payload.len(),
            base64::engine::general_purpose::STANDARD.encode(message.payload)
        )),
    }
    line
}

pub fn receipt_json(receipt: &PublishReceipt) -> Value {
    json!({
        "id": receipt.id,
        "topic": receipt.topic,
        "sequence": receipt.sequence,
        "duplicate": receipt.duplicate,
    })
}

pub fn receipt_human(receipt: &PublishReceipt) -> String {
    if receipt.duplicate {
        format!(
            "duplicate of {} #{} (id {}): nothing stored",
            receipt.topic, receipt.sequence, receipt.id
        )
    } else if receipt.sequence == 0 {
        format!("published to {} at most once (id {})", receipt.topic, receipt.id)
    } else {
        format!(
            "published to {} #{} (id {})",
            receipt.topic, receipt.sequence, receipt.id
        )
    }
}

fn ms(duration: Option<Duration>) -> Value {
    duration.map_or(Value::Null, |d| (d.as_millis() as u64).into())
}

fn human_duration(duration: Option<Duration>, none: &str) -> String {
    duration.map_or_else(|| none.to_owned(), |d| humantime::format_duration(d).to_string())
}

fn time(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

fn time_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn start_text(start: Option<StartPosition>) -> String {
    match start.unwrap_or_default() {
        StartPosition::New => "new".into(),
        StartPosition::Earliest => "earliest".into(),
        StartPosition::Sequence(sequence) => format!("seq:{sequence}"),
        StartPosition::Time(at) => format!("time:{}", humantime::format_rfc3339(at)),
    }
}

pub fn topic_json(topic: &TopicInfo) -> Value {
    let config = &topic.config;
    json!({
        "name": topic.name,
        "retention": config.retention.unwrap_or_default().as_str(),
        "max_age_ms": ms(config.max_age),
        "max_messages": config.max_messages,
        "max_bytes": config.max_bytes,
        "default_ttl_ms": ms(config.default_ttl),
        "dedup_window_ms": ms(config.dedup_window),
        "max_message_bytes": config.max_message_bytes,
        "created_at_ms": time_ms(topic.created_at),
        "first_sequence": topic.first_sequence,
        "last_sequence": topic.last_sequence,
        "messages": topic.messages,
        "bytes": topic.bytes,
    })
}

/// One line per topic: name, counts and the settings that differ most.
pub fn topic_human(topic: &TopicInfo) -> String {
    let config = &topic.config;
    let limit = |value: Option<u64>| value.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
    format!(
        "{}  messages={} bytes={} sequences={}..{} retention={} max_age={} max_messages={} max_bytes={} \
         default_ttl={} dedup_window={} max_message_bytes={} created={}",
        topic.name,
        topic.messages,
        topic.bytes,
        topic.first_sequence,
        topic.last_sequence,
        config.retention.unwrap_or_default().as_str(),
        human_duration(config.max_age, "unlimited"),
        limit(config.max_messages),
        limit(config.max_bytes),
        human_duration(config.default_ttl, "none"),
        human_duration(config.dedup_window, "default"),
        limit(config.max_message_bytes),
        time(topic.created_at),
    )
}

pub fn subscription_json(subscription: &SubscriptionInfo) -> Value {
    let config = &subscription.config;
    json!({
        "name": subscription.name,
        "pattern": config.pattern,
        "delivery": config.delivery.unwrap_or_default().as_str(),
        "ack_deadline_ms": ms(config.ack_deadline),
        "max_deliveries": config.max_deliveries,
        "dead_letter_topic": config.dead_letter_topic,
        "start": start_text(config.start),
        "priority_policy": config.priority_policy.unwrap_or_default().as_str(),
        "backoff_initial_ms": ms(config.backoff_initial),
        "backoff_max_ms": ms(config.backoff_max),
        "created_at_ms": time_ms(subscription.created_at),
        "backlog": subscription.backlog,
        "in_flight": subscription.in_flight,
        "consumers": subscription.consumers,
    })
}

pub fn subscription_human(subscription: &SubscriptionInfo) -> String {
    let config = &subscription.config;
    format!(
        "{}  pattern={} backlog={} in_flight={} consumers={} delivery={} ack_deadline={} max_deliveries={} \
         dead_letter={} start={} priority_policy={} created={}",
        subscription.name,
        config.pattern,
        subscription.backlog,
        subscription.in_flight,
        subscription.consumers,
        config.delivery.unwrap_or_default().as_str(),
        human_duration(config.ack_deadline, "default"),
        config
            .max_deliveries
            .map_or_else(|| "default".to_owned(), |n| n.to_string()),
        config.dead_letter_topic.as_deref().unwrap_or("none"),
        start_text(config.start),
        config.priority_policy.unwrap_or_default().as_str(),
        time(subscription.created_at),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(headers: &'a BTreeMap<String, String>, payload: &'a [u8]) -> MessageView<'a> {
        MessageView {
            id: "id-1",
            topic: "orders.eu",
            sequence: 42,
            priority: "high",
            attempt: 2,
            delivery: "at-least-once",
            headers,
            payload,
        }
    }

    #[test]
    fn utf8_payloads_are_text_in_json() {
        let headers = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        let value = message_json(&view(&headers, "héllo".as_bytes()));
        assert_eq!(
            value,
            json!({
                "id": "id-1",
                "topic": "orders.eu",
                "sequence": 42,
                "priority": "high",
                "attempt": 2,
                "delivery": "at-least-once",
                "headers": {"k": "v"},
                "payload": "héllo",
            })
        );
        assert!(!value.to_string().contains('\n'), "one object per line");
    }

    #[test]
    fn binary_payloads_are_base64_in_json() {
        let headers = BTreeMap::new();
        let value = message_json(&view(&headers, &[0xff, 0x00, 0x01]));
        assert_eq!(value["payload_base64"], "/wAB");
        assert!(value.get("payload").is_none());
        assert_eq!(value["headers"], json!({}));
    }

    #[test]
    fn human_lines_show_the_essentials() {
        let headers = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        assert_eq!(
            message_human(&view(&headers, b"hi")),
            "orders.eu #42 [high, attempt 2] k=v: hi"
        );
        let none = BTreeMap::new();
        assert_eq!(
            message_human(&view(&none, &[0xff])),
            "orders.eu #42 [high, attempt 2]: <1 bytes, base64 /w==>"
        );
    }

    #[test]
    fn receipts_render() {
        let receipt = PublishReceipt {
            id: "a".into(),
            topic: "t".into(),
            sequence: 3,
            duplicate: false,
            publish_time: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(
            receipt_json(&receipt),
            json!({"id": "a", "topic": "t", "sequence": 3, "duplicate": false})
        );
        assert_eq!(receipt_human(&receipt), "published to t #3 (id a)");
        let duplicate = PublishReceipt {
            duplicate: true,
            ..receipt
        };
        assert!(receipt_human(&duplicate).starts_with("duplicate of t #3"));
    }
}
