//! Builds the priority index of a data directory written before the index existed.

use crate::domain::Message;
use crate::storage::{Batch, Cf, StorageError, Store, decode, encode, keys};

use super::records::{PriorityRecord, priority_key};

/// Present once every stored message has its priority index entry.
pub const PRIORITY_INDEX_KEY: &[u8] = b"index/priorities";
/// Messages read per scan while indexing.
const CHUNK_MESSAGES: usize = 4096;

/// Indexes every stored message unless the marker says it was done. The
/// index entries and the marker are written durably: the state machine's
/// own writes skip the write-ahead log, and a crash part-way through must
/// leave the marker absent so that the next start indexes again.
pub fn ensure_priority_index(store: &dyn Store) -> Result<(), StorageError> {
    if store.get(Cf::Meta, PRIORITY_INDEX_KEY)?.is_some() {
        return Ok(());
    }
    let mut from = Vec::new();
    let mut indexed = 0u64;
    loop {
        let chunk = store.scan(Cf::Messages, &from, &keys::KEY_CEILING, CHUNK_MESSAGES)?;
        let mut batch = Batch::default();
        for (key, value) in &chunk {
            let message: Message = decode(Cf::Messages, value)?;
            batch.put(
                Cf::Priorities,
                priority_key(&message),
                encode(&PriorityRecord::of(&message)),
            );
            from = key.clone();
            from.push(0);
        }
        indexed += chunk.len() as u64;
        let done = chunk.len() < CHUNK_MESSAGES;
        if done {
            batch.put(Cf::Meta, PRIORITY_INDEX_KEY.to_vec(), encode(&()));
        }
        store.write(batch, true)?;
        if done {
            if indexed > 0 {
                tracing::info!("indexed {indexed} stored messages by priority");
            }
            return Ok(());
        }
    }
}
