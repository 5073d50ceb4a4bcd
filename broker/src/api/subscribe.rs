//! The Subscribe stream: a consumer opens with `start`, then grants credit and
//! settles deliveries on the same stream while the server streams batches.

use futures::stream::FuturesOrdered;
use hermod_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status, Streaming};

use crate::domain::limits::{MAX_CONSUMER_CREDIT, MAX_DELIVERY_BATCH, MAX_DELIVERY_BATCH_BYTES};
use crate::domain::{Pattern, SubscriptionName};
use crate::engine::{Broker, Consumer, Delivery, Settle};

use super::convert;
use super::service::BoxStream;

/// Responses buffered towards one consumer.
const RESPONSE_BUFFER: usize = 64;
/// Credit of a consumer that asks for none.
const DEFAULT_CREDIT: u32 = 256;

pub async fn open(
    broker: Broker,
    mut incoming: Streaming<pb::SubscribeRequest>,
) -> Result<Response<BoxStream<pb::SubscribeResponse>>, Status> {
    let first = incoming
        .next()
        .await
        .ok_or_else(|| Status::invalid_argument("start: the stream must open with a start request"))??;
    let Some(pb::subscribe_request::Request::Start(start)) = first.request else {
        return Err(Status::invalid_argument(
            "start: the stream must open with a start request",
        ));
    };
    let credit = match start.initial_credit {
        0 => DEFAULT_CREDIT,
        c if c > MAX_CONSUMER_CREDIT => {
            return Err(Status::invalid_argument(format!(
                "start.initial_credit: {c} is more than the allowed {MAX_CONSUMER_CREDIT}"
            )));
        }
        c => c,
    };
    let (out, rx) = mpsc::channel(RESPONSE_BUFFER);
    match start.target {
        Some(pb::subscribe_start::Target::Subscription(name)) => {
            let name = SubscriptionName::parse("start.subscription", &name)
                .map_err(|e| Status::from(crate::error::BrokerError::from(e)))?;
            let consumer = broker.consume(&name, credit).map_err(Status::from)?;
            broker.clone().spawn(durable(broker, consumer, incoming, out));
        }
        Some(pb::subscribe_start::Target::Pattern(pattern)) => {
            let pattern = Pattern::parse("start.pattern", &pattern)
                .map_err(|e| Status::from(crate::error::BrokerError::from(e)))?;
            let (id, deliveries) = broker.listen(pattern, credit);
            broker
                .clone()
                .spawn(ephemeral(broker, id, deliveries, incoming, out));
        }
        None => {
            return Err(Status::invalid_argument(
                "start: either subscription or pattern is required",
            ));
        }
    }
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

fn batch(deliveries: &[Delivery]) -> pb::SubscribeResponse {
    let messages = deliveries.iter().map(convert::delivered).collect();
    pb::SubscribeResponse {
        response: Some(pb::subscribe_response::Response::Deliveries(pb::DeliveryBatch {
            messages,
        })),
    }
}

type Out = mpsc::Sender<Result<pb::SubscribeResponse, Status>>;

/// Settle requests of one stream being carried out at once; a consumer
/// with more waits before its next request is read.
const MAX_SETTLES_IN_FLIGHT: usize = 8;

/// The answer to one settle request, once it is known.
type Settling = tokio::task::JoinHandle<pb::SubscribeResponse>;

async fn durable(
    broker: Broker,
    mut consumer: Consumer,
    mut incoming: Streaming<pb::SubscribeRequest>,
    out: Out,
) {
    // Settlements run as tasks of their own while deliveries keep flowing:
    // an ack waits for its commit (an fsync on a quorum), and the consumer
    // must not wait that long for its next messages. A task also outlives
    // the stream, so a consumer that hangs up cannot cut a settle midway.
    // Answers go back in the order the requests came.
    let mut settling: FuturesOrdered<Settling> = FuturesOrdered::new();
    loop {
        tokio::select! {
            deliveries = consumer.deliveries.recv() => {
                let sent = match deliveries {
                    Some(Ok(deliveries)) => out.send(Ok(batch(&deliveries))).await.is_ok(),
                    Some(Err(e)) => {
                        let _ = out.send(Err(Status::from(e))).await;
                        false
                    }
                    None => false,
                };
                if !sent {
                    break;
                }
            }
            request = incoming.next(), if settling.len() < MAX_SETTLES_IN_FLIGHT => {
                let Some(Ok(request)) = request else { break };
                match read_request(&consumer, request) {
                    Ok(Some((tokens, settle, field))) => {
                        let broker = broker.clone();
                        settling.push_back(tokio::spawn(settle_tokens(broker, tokens, settle, field)));
                    }
                    Ok(None) => {}
                    Err(status) => {
                        let _ = out.send(Err(status)).await;
                        break;
                    }
                }
            }
            Some(answer) = settling.next(), if !settling.is_empty() => {
                let response = answer.map_err(|e| Status::internal(format!("a settle stopped: {e}")));
                if out.send(response).await.is_err() {
                    break;
                }
            }
        }
    }
    // Dropping the consumer ends its session: unsettled deliveries return.
}

/// A settle request: its tokens, what to do with them, and the field that
/// names them in errors.
type SettleRequest = (Vec<String>, Settle, &'static str);

/// What one consumer request asks: credit is granted here; a settle is
/// returned to be carried out. An error ends the stream.
fn read_request(consumer: &Consumer, request: pb::SubscribeRequest) -> Result<Option<SettleRequest>, Status> {
    use pb::subscribe_request::Request as R;
    let (tokens, settle, field) = match request.request {
        Some(R::Credit(credit)) => {
            consumer.grant(credit.messages);
            return Ok(None);
        }
        Some(R::Ack(a)) => (a.ack_tokens, Settle::Ack, "ack.ack_tokens"),
        Some(R::Nack(n)) => (
            n.ack_tokens,
            Settle::Nack(convert::optional_ms(n.delay_ms)),
            "nack.ack_tokens",
        ),
        Some(R::Extend(e)) => (
            e.ack_tokens,
            Settle::Extend(convert::optional_ms(e.extension_ms)),
            "extend.ack_tokens",
        ),
        Some(R::Reject(r)) => (r.ack_tokens, Settle::Reject, "reject.ack_tokens"),
        Some(R::Start(_)) => {
            return Err(Status::failed_precondition(
                "start: the stream is already started",
            ));
        }
        None => return Ok(None),
    };
    let limit = crate::domain::limits::MAX_ACK_DEADLINE_MS;
    let too_long = match settle {
        Settle::Nack(Some(ms)) if ms > limit => Some(("nack.delay_ms", ms)),
        Settle::Extend(Some(ms)) if ms > limit => Some(("extend.extension_ms", ms)),
        _ => None,
    };
    if let Some((name, ms)) = too_long {
        return Err(Status::invalid_argument(format!(
            "{name}: {ms} ms is more than the allowed {limit} ms"
        )));
    }
    Ok(Some((tokens, settle, field)))
}

/// Settles `tokens` and builds the answer naming each one.
async fn settle_tokens(
    broker: Broker,
    tokens: Vec<String>,
    settle: Settle,
    field: &'static str,
) -> pb::SubscribeResponse {
    let outcomes = broker.settle(&tokens, field, settle).await;
    let results = tokens
        .into_iter()
        .zip(outcomes)
        .map(|(ack_token, outcome)| pb::SettleResult {
            ack_token,
            error: outcome.err().map(convert::item_error),
        })
        .collect();
    pb::SubscribeResponse {
        response: Some(pb::subscribe_response::Response::Settled(pb::SettleResults {
            results,
        })),
    }
}

async fn ephemeral(
    broker: Broker,
    id: u64,
    mut deliveries: mpsc::Receiver<Delivery>,
    mut incoming: Streaming<pb::SubscribeRequest>,
    out: Out,
) {
    let mut waiting = Vec::with_capacity(MAX_DELIVERY_BATCH);
    loop {
        tokio::select! {
            received = deliveries.recv_many(&mut waiting, MAX_DELIVERY_BATCH) => {
                if received == 0 || !send_in_batches(&out, &mut waiting).await {
                    break;
                }
            }
            request = incoming.next() => {
                // Ephemeral deliveries need no settling; credit is the buffer.
                match request {
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
        }
    }
    broker.unlisten(id);
}

/// Sends everything `waiting` holds, in batches of at most
/// `MAX_DELIVERY_BATCH` messages and about `MAX_DELIVERY_BATCH_BYTES`;
/// false once the client is gone.
async fn send_in_batches(out: &Out, waiting: &mut Vec<Delivery>) -> bool {
    let mut start = 0;
    while start < waiting.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < waiting.len() && (end == start || bytes < MAX_DELIVERY_BATCH_BYTES) {
            bytes += waiting[end].message.payload.len();
            end += 1;
        }
        if out.send(Ok(batch(&waiting[start..end]))).await.is_err() {
            return false;
        }
        start = end;
    }
    waiting.clear();
    true
}
