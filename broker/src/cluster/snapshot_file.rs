//! The snapshot file: every key of the replicated families as length-prefixed
//! records, written and read as a stream and checked by a CRC at the end.
//!
//! Layout: `MAGIC`, then records `[family u8][key len u32][key][value len
//! u32][value]`, then `[END][record count u64][crc32c u32]`; numbers are
//! little-endian and the CRC covers every byte before it.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::domain::limits::MAX_PAYLOAD_BYTES;
use crate::storage::keys::KEY_CEILING;
use crate::storage::{Cf, Frozen, StorageError};

const MAGIC: &[u8; 8] = b"HRMDSNP1";
/// The family byte that ends the records.
const END: u8 = 0xff;
/// Entries read from the frozen store at a time while exporting.
const EXPORT_CHUNK_ENTRIES: usize = 4096;
/// The longest key or value a record may declare: anything longer is
/// corruption, refused before memory is allocated for it.
const MAX_RECORD_PART_BYTES: u64 = MAX_PAYLOAD_BYTES + 64 * 1024;

/// A writer that keeps a running CRC of what passes through it.
struct Crc<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn storage(e: StorageError) -> io::Error {
    io::Error::other(e)
}

fn corrupt(reason: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("snapshot file: {}", reason.into()),
    )
}

/// Writes `families` of `frozen` to `path` and fsyncs it. Memory stays at
/// one chunk of entries however large the state is.
pub fn write(frozen: &dyn Frozen, families: &[Cf], path: &Path) -> io::Result<()> {
    let file = File::create(path)?;
    let mut out = Crc {
        inner: BufWriter::new(file),
        crc: 0,
    };
    out.write_all(MAGIC)?;
    let mut count: u64 = 0;
    for (tag, cf) in families.iter().enumerate() {
        let mut from = Vec::new();
        loop {
            let chunk = frozen
                .scan(*cf, &from, &KEY_CEILING, EXPORT_CHUNK_ENTRIES)
                .map_err(storage)?;
            for (key, value) in &chunk {
                out.write_all(&[tag as u8])?;
                write_part(&mut out, key)?;
                write_part(&mut out, value)?;
            }
            count += chunk.len() as u64;
            match chunk.last() {
                Some((last, _)) if chunk.len() == EXPORT_CHUNK_ENTRIES => {
                    from = last.clone();
                    from.push(0);
                }
                _ => break,
            }
        }
    }
    out.write_all(&[END])?;
    out.write_all(&count.to_le_bytes())?;
    let crc = out.crc;
    let mut inner = out.inner;
    inner.write_all(&crc.to_le_bytes())?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

fn write_part(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| corrupt("a record part exceeds 4 GiB"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)
}

/// A reader that keeps a running CRC of what it hands out.
struct CrcReader<R> {
    inner: R,
    crc: u32,
}

impl<R: Read> CrcReader<R> {
    fn exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => corrupt("truncated"),
            _ => e,
        })?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(())
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut bytes = [0; 4];
        self.exact(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn part(&mut self) -> io::Result<Vec<u8>> {
        let len = u64::from(self.u32()?);
        if len > MAX_RECORD_PART_BYTES {
            return Err(corrupt(format!("a record part of {len} bytes")));
        }
        let mut bytes = vec![0; len as usize];
        self.exact(&mut bytes)?;
        Ok(bytes)
    }
}

/// Reads the file at `path`, handing every record to `visit` in order, and
/// returns the record count. A wrong CRC, count or layout is an
/// `InvalidData` error, found only at the end: callers that must not act
/// on a bad file read it once without acting first.
pub fn read(
    path: &Path,
    families: &[Cf],
    mut visit: impl FnMut(Cf, Vec<u8>, Vec<u8>) -> io::Result<()>,
) -> io::Result<u64> {
    let mut input = CrcReader {
        inner: BufReader::new(File::open(path)?),
        crc: 0,
    };
    let mut magic = [0; 8];
    input.exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(corrupt("not a Hermod snapshot"));
    }
    let mut count: u64 = 0;
    loop {
        let mut tag = [0; 1];
        input.exact(&mut tag)?;
        if tag[0] == END {
            break;
        }
        let cf = *families
            .get(usize::from(tag[0]))
            .ok_or_else(|| corrupt(format!("unknown family {}", tag[0])))?;
        let key = input.part()?;
        let value = input.part()?;
        visit(cf, key, value)?;
        count += 1;
    }
    let mut declared = [0; 8];
    input.exact(&mut declared)?;
    let expected_crc = input.crc;
    let mut crc = [0; 4];
    input
        .inner
        .read_exact(&mut crc)
        .map_err(|_| corrupt("truncated"))?;
    if u32::from_le_bytes(crc) != expected_crc {
        return Err(corrupt("checksum mismatch"));
    }
    if u64::from_le_bytes(declared) != count {
        return Err(corrupt("record count mismatch"));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Batch, MemoryStore, Store};

    const FAMILIES: [Cf; 2] = [Cf::Meta, Cf::Messages];

    fn store_with(entries: usize) -> MemoryStore {
        let store = MemoryStore::new();
        let mut batch = Batch::default();
        for i in 0..entries {
            batch.put(Cf::Messages, format!("m{i:06}").into_bytes(), vec![7; i % 300]);
        }
        batch.put(Cf::Meta, b"topic".to_vec(), b"settings".to_vec());
        store.write(batch, true).unwrap();
        store
    }

    type Record = (Cf, Vec<u8>, Vec<u8>);

    fn read_all(path: &Path) -> io::Result<Vec<Record>> {
        let mut records = Vec::new();
        read(path, &FAMILIES, |cf, k, v| {
            records.push((cf, k, v));
            Ok(())
        })?;
        Ok(records)
    }

    #[test]
    fn every_record_comes_back_in_order_across_export_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        let entries = EXPORT_CHUNK_ENTRIES * 2 + 17;
        let store = store_with(entries);
        write(store.freeze().unwrap().as_ref(), &FAMILIES, &path).unwrap();
        let records = read_all(&path).unwrap();
        assert_eq!(records.len(), entries + 1);
        assert_eq!(records[0], (Cf::Meta, b"topic".to_vec(), b"settings".to_vec()));
        for (i, (cf, key, value)) in records[1..].iter().enumerate() {
            assert_eq!(
                (*cf, key.clone()),
                (Cf::Messages, format!("m{i:06}").into_bytes())
            );
            assert_eq!(value.len(), i % 300);
        }
    }

    #[test]
    fn a_damaged_or_truncated_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        write(store_with(50).freeze().unwrap().as_ref(), &FAMILIES, &path).unwrap();
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x01;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(read_all(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);

        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert_eq!(read_all(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);

        std::fs::write(&path, b"HRMDSNP0").unwrap();
        assert_eq!(read_all(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
