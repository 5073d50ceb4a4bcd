//! A message on its way to a consumer.

use std::sync::Arc;

use crate::domain::{DeliveryGuarantee, Message};

/// One delivery: the message, which attempt this is, and how to settle it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    pub attempt: u32,
    /// `None` for at-most-once deliveries: there is nothing to settle.
    pub ack_token: Option<String>,
    /// The guarantee this consumer gets: the weaker of message and subscription.
    pub delivery: DeliveryGuarantee,
}

impl Delivery {
    /// A live (at-most-once) delivery: first attempt, nothing to settle.
    pub fn live(message: Message) -> Self {
        Self {
            message: Arc::new(message),
            attempt: 1,
            ack_token: None,
            delivery: DeliveryGuarantee::AtMostOnce,
        }
    }
}
