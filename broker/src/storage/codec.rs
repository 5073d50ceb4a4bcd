//! Checksummed records: every value carries a CRC32C of its bytes, checked on
//! every read, so a flipped bit is reported instead of served.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Cf, StorageError};

/// Record format version, first byte of every value.
const FORMAT_V1: u8 = 1;
const HEADER_BYTES: usize = 5;

/// Encodes a value as `[version][crc32c LE][postcard bytes]`.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let body = postcard::to_stdvec(value).expect("postcard encodes every value of our types");
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes and verifies a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(cf: Cf, bytes: &[u8]) -> Result<T, StorageError> {
    let corrupt = |reason: String| StorageError::Corruption {
        cf: cf.name(),
        reason,
    };
    if bytes.len() < HEADER_BYTES {
        return Err(corrupt(format!(
            "record of {} bytes is shorter than its header",
            bytes.len()
        )));
    }
    if bytes[0] != FORMAT_V1 {
        return Err(corrupt(format!("unknown record format {}", bytes[0])));
    }
    let stored = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let body = &bytes[HEADER_BYTES..];
    let actual = crc32c::crc32c(body);
    if stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch: stored {stored:08x}, computed {actual:08x}"
        )));
    }
    postcard::from_bytes(body).map_err(|e| corrupt(format!("undecodable record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_flipped_bits() {
        let value = ("topic".to_string(), 42u64, vec![1u8, 2, 3]);
        let mut bytes = encode(&value);
        let back: (String, u64, Vec<u8>) = decode(Cf::Messages, &bytes).unwrap();
        assert_eq!(back, value);
        for i in 0..bytes.len() {
            bytes[i] ^= 0x10;
            assert!(
                decode::<(String, u64, Vec<u8>)>(Cf::Messages, &bytes).is_err(),
                "byte {i}"
            );
            bytes[i] ^= 0x10;
        }
        assert!(decode::<u64>(Cf::Meta, &[1, 2]).is_err());
    }
}
