//! The in-process transport: nodes of one process (a test cluster) call each
//! other's handlers directly. Requests and replies are still encoded and
//! decoded, so what crosses this transport could cross the network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::inbound::PeerHandler;
use super::transport::{PeerFuture, PeerReply, PeerRequest, Transport, TransportError};

/// The nodes of one process, by advertised address.
#[derive(Clone, Default)]
pub struct LocalNetwork {
    nodes: Arc<Mutex<HashMap<String, Weak<PeerHandler>>>>,
}

impl LocalNetwork {
    /// Makes the node at `address` reachable; it stays so while `handler` lives.
    pub fn register(&self, address: &str, handler: &Arc<PeerHandler>) {
        self.nodes
            .lock()
            .expect("local network lock")
            .insert(address.into(), Arc::downgrade(handler));
    }

    fn find(&self, address: &str) -> Option<Arc<PeerHandler>> {
        self.nodes
            .lock()
            .expect("local network lock")
            .get(address)
            .and_then(Weak::upgrade)
    }
}

impl Transport for LocalNetwork {
    fn call(&self, address: &str, request: PeerRequest) -> PeerFuture {
        let target = self.find(address);
        let address = address.to_string();
        Box::pin(async move {
            let handler = target
                .ok_or_else(|| TransportError::Unreachable(address, "no such node in this process".into()))?;
            let request = PeerRequest::decode(&request.encode()?)?;
            let reply = handler.handle(request).await;
            PeerReply::decode(&reply.encode()?)
        })
    }
}
