//! Builders of wire requests: publish messages and subscription settings.

use hermod_proto::v1 as pb;
use tonic::Code;

use crate::expect::expect_item_error;
use crate::fixture::Fx;

/// A message builder over the wire type.
pub(crate) struct Message(pb::PublishMessage);

pub(crate) fn message(topic: &str, payload: &[u8]) -> Message {
    Message(pb::PublishMessage {
        topic: topic.into(),
        payload: payload.to_vec().into(),
        ..Default::default()
    })
}

impl Message {
    pub(crate) fn id(mut self, id: &str) -> Self {
        self.0.id = id.into();
        self
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.0.headers.insert(name.into(), value.into());
        self
    }

    pub(crate) fn with(mut self, change: impl FnOnce(&mut pb::PublishMessage)) -> Self {
        change(&mut self.0);
        self
    }
}

impl From<Message> for pb::PublishMessage {
    fn from(m: Message) -> Self {
        m.0
    }
}

impl Fx {
    pub(crate) async fn send(&mut self, m: Message) -> anyhow::Result<pb::PublishResult> {
        self.publish_one(m.into()).await
    }

    pub(crate) async fn send_ok(&mut self, m: Message) -> anyhow::Result<pb::PublishAck> {
        self.publish_ok(m.into()).await
    }

    /// Sends one message that must be refused with `code`, naming `field`.
    pub(crate) async fn send_refused(
        &mut self,
        m: Message,
        code: Code,
        field: &str,
    ) -> anyhow::Result<pb::ItemError> {
        let result = self.send(m).await?;
        Ok(expect_item_error(&result, code, field))
    }
}

pub(crate) fn sub_settings(pattern: &str) -> pb::SubscriptionSettings {
    pb::SubscriptionSettings {
        pattern: pattern.into(),
        ..Default::default()
    }
}
