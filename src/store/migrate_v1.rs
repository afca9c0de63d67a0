//! Imports a version 1 state file (JSON: the gone episodes of each watch)
//! into the store on first open, so that a source purged in its episode
//! stays `already_purged` across the upgrade. The JSON is then moved aside
//! to `<path>.v1.json` (the caller does the move and logs it).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use serde::Deserialize;

use super::{StoreError, millis};
use crate::policy::Episode;

#[derive(Deserialize)]
struct V1File {
    version: u32,
    #[serde(default)]
    watches: BTreeMap<String, BTreeMap<String, Episode>>,
}

/// Whether `path` holds a JSON document (a version 1 state) rather than a
/// SQLite database (whose first bytes are "SQLite format 3").
pub fn is_v1_json(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = [0u8; 64];
    let n = file.take(64).read(&mut head).unwrap_or(0);
    head[..n]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// Where a migrated version 1 file is moved: `<path>.v1.json`.
pub fn aside_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".v1.json");
    path.with_file_name(name)
}

/// Reads the version 1 file at `path` into the store; returns how many
/// sources it held. Its sources were gone (v1 kept nothing else); their
/// probe URL is filled in by the next pass.
pub fn import(conn: &mut Connection, path: &Path) -> Result<usize, StoreError> {
    let err = |message: String| StoreError::Migrate {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let file: V1File = serde_json::from_str(&text).map_err(|e| err(format!("not valid: {e}")))?;
    if file.version != 1 {
        return Err(err(format!("version {} is not 1", file.version)));
    }
    let sql = |e: rusqlite::Error| err(e.to_string());
    let tx = conn.transaction().map_err(sql)?;
    let mut n = 0;
    {
        let mut stmt = tx
            .prepare(
                "INSERT OR IGNORE INTO sources (watch, src, probe, referenced, first_seen, seen_in,
                     last_verdict, last_status, last_decision, gone_streak, gone_since, last_gone,
                     gone_status, purged_at)
                 VALUES (?1, ?2, '', 1, ?3, 'version 1 state', 'gone', ?4, ?5, ?6, ?3, ?7, ?4, ?8)",
            )
            .map_err(sql)?;
        for (watch, episodes) in &file.watches {
            for (src, ep) in episodes {
                let decision = if ep.purged_at.is_some() {
                    "already_purged"
                } else {
                    "pending"
                };
                stmt.execute(params![
                    watch,
                    src,
                    millis(ep.first_gone),
                    ep.last_status,
                    decision,
                    ep.gone_streak,
                    millis(ep.last_gone),
                    ep.purged_at.map(millis),
                ])
                .map_err(sql)?;
                n += 1;
            }
        }
    }
    tx.commit().map_err(sql)?;
    Ok(n)
}
