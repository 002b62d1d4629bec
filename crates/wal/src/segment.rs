//! Segment files: `{seq:016x}.wal` in the WAL directory, numbered without
//! gaps, and reading one back with torn-tail detection.

use std::path::{Path, PathBuf};

use crate::error::{io, WalError};
use crate::fs::FileSystem;
use crate::record::{self, Bad, Record};

/// The file name of segment `seq`.
pub(crate) fn file_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

/// The sequence numbers of the segments in `dir`, ascending.
pub(crate) fn list<F: FileSystem>(fs: &F, dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut seqs = Vec::new();
    for name in fs.list_dir(dir).map_err(io("listing", dir))? {
        if let Some(hex) = name.strip_suffix(".wal") {
            if let Ok(seq) = u64::from_str_radix(hex, 16) {
                if hex.len() == 16 {
                    seqs.push(seq);
                }
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// The records of one segment, and where its valid data ends.
pub(crate) struct SegmentContents {
    pub(crate) records: Vec<Record>,
    /// Length of the valid prefix; anything after it is a torn tail.
    pub(crate) valid_len: u64,
    /// The file's length on disk.
    pub(crate) file_len: u64,
}

/// Reads segment `path`. A damaged record is a torn tail only if `is_last`
/// and nothing but that record (or zeros) follows; otherwise it is corruption.
pub(crate) fn read<F: FileSystem>(
    fs: &F,
    path: &PathBuf,
    is_last: bool,
) -> Result<SegmentContents, WalError> {
    let data = fs.read(path).map_err(io("reading", path))?;
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < data.len() {
        match record::decode(&data[offset..]) {
            Ok((r, size)) => {
                records.push(r);
                offset += size;
            }
            Err(bad) => {
                let rest = &data[offset..];
                let torn = is_last
                    && match bad {
                        Bad::Truncated => true,
                        // A zero-filled or half-written last record, or
                        // one whose length a torn write left as garbage.
                        Bad::Length(_) | Bad::Checksum => ends_here(rest),
                        _ => false,
                    };
                if !torn {
                    return Err(WalError::Corrupt {
                        path: path.clone(),
                        offset: offset as u64,
                        reason: format!("{bad:?}"),
                    });
                }
                break;
            }
        }
    }
    Ok(SegmentContents {
        records,
        valid_len: offset as u64,
        file_len: data.len() as u64,
    })
}

/// Whether the damaged bytes `rest` are the last record written: no intact
/// record begins anywhere after the damaged one's header.
fn ends_here(rest: &[u8]) -> bool {
    (1..rest.len()).all(|start| record::decode(&rest[start..]).is_err())
}
