//! The mock broker: stores messages deduplicated by id, hands out one
//! subscription's deliveries, and fails on cue (lost answers, broken
//! streams, acks whose outcome is unknown).

use super::*;

#[derive(Default)]
pub(super) struct State {
    /// Stored messages by sequence - 1.
    pub(super) stored: Vec<pb::PublishMessage>,
    pub(super) ids: HashMap<String, u64>,
    /// Publish calls that store and then answer UNAVAILABLE, as if the answer were lost.
    pub(super) lose_publish_answers: u32,
    /// Publish streams to break (after storing) at this many messages.
    pub(super) break_publish_stream_after: Option<usize>,
    /// Deliverable messages of subscription "work", by sequence.
    pub(super) queue: VecDeque<u64>,
    pub(super) attempts: HashMap<u64, u32>,
    /// Subscribe streams to break after this many deliveries.
    pub(super) break_subscribe_after: Option<usize>,
    pub(super) acked: Vec<String>,
    /// Confirmed acks to answer with a per-token UNAVAILABLE (the ack was
    /// committed, but its commit raced a leader change).
    pub(super) unknown_ack_outcomes: u32,
    pub(super) confirmed: Vec<String>,
    pub(super) delivered: usize,
    pub(super) subscribe_calls: usize,
    pub(super) topics: HashMap<String, pb::TopicSettings>,
}

#[derive(Clone, Default)]
pub(super) struct Mock {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) published: Arc<Notify>,
}

fn publish_time() -> u64 {
    1_700_000_000_000
}

impl Mock {
    /// Stores a message unless its id is known; returns (sequence, duplicate).
    fn store(&self, message: pb::PublishMessage) -> pb::PublishResult {
        use pb::publish_result::Outcome;
        if message.topic.contains(' ') {
            return pb::PublishResult {
                outcome: Some(Outcome::Error(pb::ItemError {
                    code: tonic::Code::InvalidArgument as i32,
                    message: "topic may not hold spaces".into(),
                    field: "messages[0].topic".into(),
                })),
            };
        }
        let mut state = self.state.lock().unwrap();
        let (sequence, duplicate) = match state.ids.get(&message.id) {
            Some(sequence) => (*sequence, true),
            None => {
                state.stored.push(message.clone());
                let sequence = state.stored.len() as u64;
                state.ids.insert(message.id.clone(), sequence);
                state.queue.push_back(sequence);
                (sequence, false)
            }
        };
        drop(state);
        self.published.notify_waiters();
        pb::PublishResult {
            outcome: Some(Outcome::Ack(pb::PublishAck {
                id: message.id,
                topic: message.topic,
                sequence,
                duplicate,
                publish_time_ms: publish_time(),
            })),
        }
    }

    fn next_delivery(&self) -> Option<pb::DeliveredMessage> {
        let mut state = self.state.lock().unwrap();
        let sequence = state.queue.pop_front()?;
        let attempt = {
            let attempt = state.attempts.entry(sequence).or_insert(0);
            *attempt += 1;
            *attempt
        };
        state.delivered += 1;
        let message = state.stored[sequence as usize - 1].clone();
        Some(pb::DeliveredMessage {
            id: message.id,
            topic: message.topic,
            payload: message.payload,
            headers: message.headers,
            priority: message.priority,
            sequence,
            publish_time_ms: publish_time(),
            attempt,
            ack_token: format!("tok-{sequence}"),
            expires_at_ms: 0,
            delivery: message.delivery,
        })
    }
}

/// A stream's ack leaves out the id and topic, as the broker's does.
fn without_names(mut result: pb::PublishResult) -> pb::PublishResult {
    if let Some(pb::publish_result::Outcome::Ack(ack)) = &mut result.outcome {
        ack.id.clear();
        ack.topic.clear();
    }
    result
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Broker for Mock {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let results = request
            .into_inner()
            .messages
            .into_iter()
            .map(|m| self.store(m))
            .collect();
        let mut state = self.state.lock().unwrap();
        if state.lose_publish_answers > 0 {
            state.lose_publish_answers -= 1;
            return Err(Status::unavailable("answer lost"));
        }
        Ok(Response::new(pb::PublishResponse { results }))
    }

    type PublishStreamStream = BoxStream<pb::PublishStreamResponse>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let mock = self.clone();
        tokio::spawn(async move {
            let mut count = 0;
            while let Ok(Some(request)) = inbound.message().await {
                for item in request.items {
                    let result = mock.store(item.message.unwrap_or_default());
                    count += 1;
                    let limit = mock.state.lock().unwrap().break_publish_stream_after;
                    if limit == Some(count) {
                        mock.state.lock().unwrap().break_publish_stream_after = None;
                        let _ = tx.send(Err(Status::unavailable("stream broken")));
                        return;
                    }
                    let answer = pb::PublishStreamAnswer {
                        correlation_id: item.correlation_id,
                        result: Some(without_names(result)),
                    };
                    let _ = tx.send(Ok(pb::PublishStreamResponse {
                        answers: vec![answer],
                    }));
                }
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    type SubscribeStream = BoxStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        use pb::subscribe_request::Request as R;
        use pb::subscribe_response::Response as S;
        let mut inbound = request.into_inner();
        let Some(R::Start(start)) = inbound.message().await?.and_then(|r| r.request) else {
            return Err(Status::invalid_argument(
                "request: the first request must be start",
            ));
        };
        if start.target != Some(pb::subscribe_start::Target::Subscription("work".into())) {
            return Err(Status::not_found("subscription: no such subscription"));
        }
        let break_after = {
            let mut state = self.state.lock().unwrap();
            state.subscribe_calls += 1;
            state.break_subscribe_after.take()
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let mock = self.clone();
        tokio::spawn(async move {
            let mut credit = start.initial_credit as usize;
            let mut sent = 0;
            let mut leased: Vec<u64> = Vec::new();
            loop {
                while credit > 0 {
                    if break_after == Some(sent) {
                        // Unacked deliveries go back to the queue, like a consumer disconnect.
                        let mut state = mock.state.lock().unwrap();
                        for sequence in leased.drain(..).rev() {
                            state.queue.push_front(sequence);
                        }
                        let _ = tx.send(Err(Status::unavailable("leader changed")));
                        return;
                    }
                    let Some(message) = mock.next_delivery() else {
                        break;
                    };
                    leased.push(message.sequence);
                    credit -= 1;
                    sent += 1;
                    let batch = pb::DeliveryBatch {
                        messages: vec![message],
                    };
                    let _ = tx.send(Ok(pb::SubscribeResponse {
                        response: Some(S::Deliveries(batch)),
                    }));
                }
                let published = mock.published.notified();
                tokio::select! {
                    request = inbound.message() => {
                        let Ok(Some(request)) = request else {
                            let mut state = mock.state.lock().unwrap();
                            for sequence in leased.drain(..).rev() {
                                state.queue.push_front(sequence);
                            }
                            return;
                        };
                        match request.request {
                            Some(R::Credit(c)) => credit += c.messages as usize,
                            Some(R::Ack(tokens)) => {
                                let results = tokens.ack_tokens.iter().map(|t| pb::SettleResult {
                                    ack_token: t.clone(),
                                    error: None,
                                }).collect();
                                for token in &tokens.ack_tokens {
                                    let sequence: u64 = token.trim_start_matches("tok-").parse().unwrap();
                                    leased.retain(|s| *s != sequence);
                                }
                                mock.state.lock().unwrap().acked.extend(tokens.ack_tokens);
                                let settled = pb::SettleResults { results };
                                let _ = tx.send(Ok(pb::SubscribeResponse { response: Some(S::Settled(settled)) }));
                            }
                            _ => {}
                        }
                    }
                    () = published => {}
                }
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn ack(&self, request: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        let tokens = request.into_inner().ack_tokens;
        let mut state = self.state.lock().unwrap();
        state.confirmed.extend(tokens.clone());
        let unknown = state.unknown_ack_outcomes > 0;
        state.unknown_ack_outcomes = state.unknown_ack_outcomes.saturating_sub(1);
        let results = tokens
            .into_iter()
            .map(|ack_token| pb::AckResult {
                ack_token,
                confirmed: !unknown,
                error: unknown.then(|| pb::ItemError {
                    code: tonic::Code::Unavailable as i32,
                    message: "the leader changed while the ack was committed; retry".into(),
                    field: String::new(),
                }),
            })
            .collect();
        Ok(Response::new(pb::AckResponse { results }))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::TopicInfo>, Status> {
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap();
        if state.topics.contains_key(&request.name) {
            return Err(Status::already_exists(format!(
                "name: topic {:?} exists",
                request.name
            )));
        }
        let mut settings = request.settings.unwrap_or_default();
        if settings.dedup_window_ms == 0 {
            settings.dedup_window_ms = 120_000;
        }
        state.topics.insert(request.name.clone(), settings);
        Ok(Response::new(pb::TopicInfo {
            name: request.name,
            settings: Some(settings),
            ..Default::default()
        }))
    }

    async fn get_topic(
        &self,
        request: Request<pb::GetTopicRequest>,
    ) -> Result<Response<pb::TopicInfo>, Status> {
        let name = request.into_inner().name;
        let state = self.state.lock().unwrap();
        let settings = state
            .topics
            .get(&name)
            .ok_or_else(|| Status::not_found(format!("name: no topic {name:?}")))?;
        Ok(Response::new(pb::TopicInfo {
            name,
            settings: Some(*settings),
            ..Default::default()
        }))
    }

    async fn list_topics(
        &self,
        _: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let state = self.state.lock().unwrap();
        let topics = state
            .topics
            .iter()
            .map(|(name, settings)| pb::TopicInfo {
                name: name.clone(),
                settings: Some(*settings),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let name = request.into_inner().name;
        match self.state.lock().unwrap().topics.remove(&name) {
            Some(_) => Ok(Response::new(pb::DeleteTopicResponse {})),
            None => Err(Status::not_found(format!("name: no topic {name:?}"))),
        }
    }

    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::SubscriptionInfo>, Status> {
        let request = request.into_inner();
        if request.settings.as_ref().is_none_or(|s| s.ack_deadline_ms == 1) {
            return Err(Status::invalid_argument(
                "settings.ack_deadline_ms: 1 ms is out of range",
            ));
        }
        Ok(Response::new(pb::SubscriptionInfo {
            name: request.name,
            settings: request.settings,
            ..Default::default()
        }))
    }

    async fn get_subscription(
        &self,
        _: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::SubscriptionInfo>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn list_subscriptions(
        &self,
        _: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn delete_subscription(
        &self,
        _: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }
}
