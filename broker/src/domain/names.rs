//! Validated names: topics, patterns, subscriptions and message ids.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ValidationError;
use super::limits::{MAX_MESSAGE_ID_BYTES, MAX_SUBSCRIPTION_NAME_BYTES, MAX_TOPIC_NAME_BYTES};

/// Prefix of the names the broker keeps for itself.
pub const RESERVED_PREFIX: char = hermod_proto::routing::RESERVED_PREFIX;
/// The topic carrying the cluster's own events.
pub const CLUSTER_EVENTS_TOPIC: &str = "$cluster.events";

fn valid_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn check_tokens(
    field: &str,
    value: &str,
    what: &str,
    token_ok: impl Fn(usize, usize, &str) -> Result<(), String>,
) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, format!("{what} must not be empty")));
    }
    if value.len() > MAX_TOPIC_NAME_BYTES {
        return Err(ValidationError::new(
            field,
            format!(
                "{what} is {} bytes, at most {MAX_TOPIC_NAME_BYTES} allowed",
                value.len()
            ),
        ));
    }
    let count = value.split('.').count();
    for (index, token) in value.split('.').enumerate() {
        token_ok(index, count, token)
            .map_err(|reason| ValidationError::new(field, format!("{what} {value:?}: {reason}")))?;
    }
    Ok(())
}

fn plain_token(token: &str, allow_reserved_start: bool) -> Result<(), String> {
    if token.is_empty() {
        return Err("empty token (leading, trailing or double '.')".into());
    }
    let body = match token.strip_prefix(RESERVED_PREFIX) {
        Some(rest) if allow_reserved_start => rest,
        _ => token,
    };
    if body.is_empty() || !body.chars().all(valid_token_char) {
        return Err(format!("token {token:?} may hold only A-Z a-z 0-9 _ -"));
    }
    Ok(())
}

/// A topic name: dot-separated tokens of `[A-Za-z0-9_-]`, at most 255 bytes.
/// Names starting with `$` belong to the broker.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicName(Arc<str>);

impl TopicName {
    /// Validates a name a client may publish to (not `$`-reserved).
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        let name = Self::parse_any(field, value)?;
        if name.is_reserved() {
            return Err(ValidationError::new(
                field,
                format!("topic {value:?} is reserved: names starting with '$' belong to the broker"),
            ));
        }
        Ok(name)
    }

    /// Validates any name, reserved ones included (for reads and the broker itself).
    pub fn parse_any(field: &str, value: &str) -> Result<Self, ValidationError> {
        check_tokens(field, value, "topic", |index, _, token| {
            plain_token(token, index == 0)
        })?;
        Ok(Self(Arc::from(value)))
    }

    /// The `$cluster.events` topic.
    pub fn cluster_events() -> Self {
        Self(Arc::from(CLUSTER_EVENTS_TOPIC))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(RESERVED_PREFIX)
    }

    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// A topic filter: `*` matches exactly one token, `>` one or more trailing tokens.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pattern(Arc<str>);

impl Pattern {
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        check_tokens(field, value, "pattern", |index, count, token| match token {
            "*" => Ok(()),
            ">" if index + 1 == count => Ok(()),
            ">" => Err("'>' may only be the last token".into()),
            _ => plain_token(token, index == 0),
        })?;
        Ok(Self(Arc::from(value)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `topic` is selected by this pattern. A pattern whose first
    /// token is a wildcard never selects a reserved (`$`) topic: broker
    /// topics are only seen by those who name them.
    pub fn matches(&self, topic: &TopicName) -> bool {
        let mut topic_tokens = topic.tokens();
        let mut first = true;
        for pattern_token in self.0.split('.') {
            let Some(topic_token) = topic_tokens.next() else {
                return false;
            };
            let reserved_first = first && topic_token.starts_with(RESERVED_PREFIX);
            first = false;
            match pattern_token {
                ">" => return !reserved_first,
                "*" if reserved_first => return false,
                "*" => {}
                literal if literal != topic_token => return false,
                _ => {}
            }
        }
        topic_tokens.next().is_none()
    }

    /// True when the pattern has no wildcard, i.e. names exactly one topic.
    pub fn literal_topic(&self) -> Option<TopicName> {
        let wild = self.0.split('.').any(|t| t == "*" || t == ">");
        (!wild).then(|| TopicName(self.0.clone()))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// A durable subscription's name: the same alphabet as topic tokens, dots allowed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubscriptionName(Arc<str>);

impl SubscriptionName {
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        if value.is_empty() {
            return Err(ValidationError::new(field, "subscription name must not be empty"));
        }
        if value.len() > MAX_SUBSCRIPTION_NAME_BYTES {
            return Err(ValidationError::new(
                field,
                format!(
                    "subscription name is {} bytes, at most {MAX_SUBSCRIPTION_NAME_BYTES} allowed",
                    value.len()
                ),
            ));
        }
        if !value.chars().all(|c| valid_token_char(c) || c == '.') {
            return Err(ValidationError::new(
                field,
                format!("subscription name {value:?} may hold only A-Z a-z 0-9 _ - ."),
            ));
        }
        Ok(Self(Arc::from(value)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubscriptionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SubscriptionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// A message's idempotency key: client-chosen (1..=128 bytes, printable, no
/// spaces) or a broker-made UUIDv7.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(Arc<str>);

impl MessageId {
    /// Validates a client's id; an empty one is replaced by a fresh UUIDv7.
    pub fn parse_or_generate(field: &str, value: &str) -> Result<Self, ValidationError> {
        if value.is_empty() {
            return Ok(Self::generate());
        }
        Self::parse(field, value)
    }

    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        if value.is_empty() {
            return Err(ValidationError::new(field, "message id must not be empty"));
        }
        if value.len() > MAX_MESSAGE_ID_BYTES {
            return Err(ValidationError::new(
                field,
                format!(
                    "message id is {} bytes, at most {MAX_MESSAGE_ID_BYTES} allowed",
                    value.len()
                ),
            ));
        }
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ValidationError::new(
                field,
                "message id must not contain whitespace or control characters",
            ));
        }
        Ok(Self(Arc::from(value)))
    }

    pub fn generate() -> Self {
        Self(Arc::from(uuid::Uuid::now_v7().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> TopicName {
        TopicName::parse_any("t", s).unwrap()
    }

    fn pattern(s: &str) -> Pattern {
        Pattern::parse("p", s).unwrap()
    }

    #[test]
    fn topic_names_follow_the_alphabet() {
        for ok in ["a", "orders.eu-1.created", "A_b-9.x", &"a".repeat(255)] {
            assert!(TopicName::parse("topic", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a.*",
            "a.>",
            "é",
            &"a".repeat(256),
            "a/b",
        ] {
            let err = TopicName::parse("topic", bad).unwrap_err();
            assert_eq!(err.field, "topic", "{bad}");
        }
    }

    #[test]
    fn reserved_topics_are_refused_to_clients_but_parse_for_the_broker() {
        let err = TopicName::parse("messages[0].topic", "$cluster.events").unwrap_err();
        assert!(err.message.contains("reserved"));
        assert!(
            TopicName::parse_any("topic", "$cluster.events")
                .unwrap()
                .is_reserved()
        );
        assert!(TopicName::parse_any("topic", "a.$b").is_err());
        assert!(TopicName::parse_any("topic", "$").is_err());
    }

    #[test]
    fn patterns_match_like_nats() {
        let cases = [
            ("a.b.c", "a.b.c", true),
            ("a.b.c", "a.b", false),
            ("a.*.c", "a.x.c", true),
            ("a.*.c", "a.x.y.c", false),
            ("a.*", "a", false),
            ("a.>", "a.b", true),
            ("a.>", "a.b.c.d", true),
            ("a.>", "a", false),
            (">", "anything.at.all", true),
            ("*", "one", true),
            ("*", "one.two", false),
            ("*.b.>", "a.b.c", true),
            ("*.b.>", "a.c.c", false),
            (">", "$cluster.events", false),
            ("*.events", "$cluster.events", false),
            ("$cluster.>", "$cluster.events", true),
            ("$cluster.events", "$cluster.events", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(pattern(p).matches(&topic(t)), want, "{p} vs {t}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "a.>.b", "a..b", "a.b*", "a.**", ">.a"] {
            assert!(Pattern::parse("pattern", bad).is_err(), "{bad}");
        }
        assert_eq!(pattern("a.b").literal_topic(), Some(topic("a.b")));
        assert_eq!(pattern("a.*").literal_topic(), None);
    }

    #[test]
    fn message_ids_are_bounded_and_printable() {
        assert!(MessageId::parse("id", &"x".repeat(128)).is_ok());
        assert!(MessageId::parse("id", &"x".repeat(129)).is_err());
        assert!(MessageId::parse("id", "a b").is_err());
        assert!(MessageId::parse("id", "").is_err());
        let generated = MessageId::parse_or_generate("id", "").unwrap();
        assert_eq!(generated.as_str().len(), 36);
    }

    #[test]
    fn subscription_names_are_checked() {
        assert!(SubscriptionName::parse("name", "billing.workers-1").is_ok());
        assert!(SubscriptionName::parse("name", "").is_err());
        assert!(SubscriptionName::parse("name", "a b").is_err());
        assert!(SubscriptionName::parse("name", &"s".repeat(256)).is_err());
    }
}
