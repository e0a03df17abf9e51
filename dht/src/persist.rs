//! On-disk state of a node (feature `net`): the routing table and the records it holds, in a redb
//! database (`DATA_DIR/dht.redb`). redb commits are atomic and copy-on-write, so a crash at any
//! point leaves the last committed snapshot readable; the driver commits a new snapshot every few
//! seconds when something changed, and on shutdown.
//!
//! Why redb: pure Rust (no C build), MIT OR Apache-2.0, crash-safe transactions, one file.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::proto::{SavedPeer, SavedRecord, Snapshot};
use crate::wire;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const PEERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("peers");
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Layout version of the database.
const FORMAT: u64 = 1;

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Opening or creating the file failed (corrupt, locked by another process, no permission).
    #[error("{path}: cannot open the node database: {source}")]
    Open {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: redb::DatabaseError,
    },
    /// The file is a database of another layout version.
    #[error("{path}: database format {found}, this build reads format {FORMAT}")]
    Format {
        /// File.
        path: PathBuf,
        /// Version found.
        found: u64,
    },
    /// A read or write transaction failed.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<redb::Error>,
    },
    /// A saved entry could not be encoded.
    #[error("{path}: cannot encode an entry: {source}")]
    Encode {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: wire::DecodeError,
    },
}

/// The node database.
pub struct Persist {
    db: Database,
    path: PathBuf,
}

/// Entries of a loaded snapshot that could not be decoded (skipped, counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Undecodable entries skipped.
    pub corrupt: usize,
}

impl Persist {
    /// Opens or creates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, PersistError> {
        let db = Database::create(path).map_err(|source| PersistError::Open { path: path.to_path_buf(), source })?;
        let p = Persist { db, path: path.to_path_buf() };
        let found = p.read_format()?;
        match found {
            None => p.write_format()?,
            Some(FORMAT) => {}
            Some(found) => return Err(PersistError::Format { path: path.to_path_buf(), found }),
        }
        Ok(p)
    }

    fn io(&self, e: impl Into<redb::Error>) -> PersistError {
        PersistError::Io { path: self.path.clone(), source: Box::new(e.into()) }
    }

    fn encoding(&self, source: wire::DecodeError) -> PersistError {
        PersistError::Encode { path: self.path.clone(), source }
    }

    fn read_format(&self) -> Result<Option<u64>, PersistError> {
        let tx = self.db.begin_read().map_err(|e| self.io(e))?;
        let t = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        Ok(t.get("format").map_err(|e| self.io(e))?.map(|v| v.value()))
    }

    fn write_format(&self) -> Result<(), PersistError> {
        let tx = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut t = tx.open_table(META).map_err(|e| self.io(e))?;
            t.insert("format", FORMAT).map_err(|e| self.io(e))?;
        }
        tx.commit().map_err(|e| self.io(e))
    }

    /// Replaces the saved state with `snap` in one atomic transaction.
    pub fn save(&self, snap: &Snapshot) -> Result<(), PersistError> {
        let tx = self.db.begin_write().map_err(|e| self.io(e))?;
        tx.delete_table(PEERS).map_err(|e| self.io(e))?;
        tx.delete_table(RECORDS).map_err(|e| self.io(e))?;
        {
            let mut peers = tx.open_table(PEERS).map_err(|e| self.io(e))?;
            for p in &snap.peers {
                let v = wire::encode(p).map_err(|e| self.encoding(e))?;
                peers.insert(p.record.id.as_bytes().as_slice(), v.as_slice()).map_err(|e| self.io(e))?;
            }
            let mut records = tx.open_table(RECORDS).map_err(|e| self.io(e))?;
            for r in &snap.records {
                let mut k = r.key.0.to_vec();
                // One row per record, and per writer for set entries.
                if let wire::Record::SetEntry(e) = &r.record {
                    k.extend_from_slice(&e.public_key);
                }
                let v = wire::encode(r).map_err(|e| self.encoding(e))?;
                records.insert(k.as_slice(), v.as_slice()).map_err(|e| self.io(e))?;
            }
        }
        tx.commit().map_err(|e| self.io(e))
    }

    /// Loads the saved state; undecodable rows are skipped and counted.
    pub fn load(&self) -> Result<(Snapshot, LoadReport), PersistError> {
        let tx = self.db.begin_read().map_err(|e| self.io(e))?;
        let mut snap = Snapshot::default();
        let mut report = LoadReport::default();
        if let Ok(t) = tx.open_table(PEERS) {
            for row in t.iter().map_err(|e| self.io(e))? {
                let (_, v) = row.map_err(|e| self.io(e))?;
                match wire::decode::<SavedPeer>(v.value()) {
                    Ok(p) => snap.peers.push(p),
                    Err(_) => report.corrupt += 1,
                }
            }
        }
        if let Ok(t) = tx.open_table(RECORDS) {
            for row in t.iter().map_err(|e| self.io(e))? {
                let (_, v) = row.map_err(|e| self.io(e))?;
                match wire::decode::<SavedRecord>(v.value()) {
                    Ok(r) => snap.records.push(r),
                    Err(_) => report.corrupt += 1,
                }
            }
        }
        Ok((snap, report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::wire::bounded::BoundedBytes;
    use crate::wire::{Key, Record, WireAddr};

    #[test]
    fn save_load_roundtrip_and_replace() {
        let dir = std::env::temp_dir().join(format!("suprnova-persist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dht.redb");
        let id = Identity::from_seed([3; 32]);
        let addr = WireAddr::V4([127, 0, 0, 1], 4000);
        let rec = id.make_record(1, 0, &[addr]).unwrap();
        let value = b"v".to_vec();
        let saved = SavedRecord {
            key: Key::for_immutable(&value),
            record: Record::Immutable { value: BoundedBytes::try_from(&value[..]).unwrap() },
            expires_unix_ms: 123,
            owner: id.id(),
        };
        let snap = Snapshot { peers: vec![SavedPeer { record: rec, addr }], records: vec![saved] };
        {
            let p = Persist::open(&path).unwrap();
            p.save(&snap).unwrap();
        }
        let p = Persist::open(&path).unwrap();
        assert_eq!(p.load().unwrap(), (snap, LoadReport::default()));
        p.save(&Snapshot::default()).unwrap();
        assert_eq!(p.load().unwrap().0, Snapshot::default());
        drop(p);
        // Not a database: a clear error, not a panic.
        std::fs::write(dir.join("junk.redb"), b"this is not redb").unwrap();
        assert!(matches!(Persist::open(&dir.join("junk.redb")), Err(PersistError::Open { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
