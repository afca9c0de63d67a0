//! The state file: which sources are gone, for how many passes, and whether
//! they were purged in their gone episode. Versioned JSON, replaced
//! atomically (temporary file in the same folder, fsync, rename, fsync of the
//! folder), so a crash at any moment leaves the old or the new file. One
//! writer at a time: a writer holds an exclusive lock on `<state>.lock`,
//! which the kernel drops when the holder dies.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::policy::Episode;

/// The version this build reads and writes.
pub const VERSION: u32 = 1;

/// The episodes of one watch, by source.
pub type WatchState = BTreeMap<String, Episode>;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "state file {path} is not valid ({message}); fix it or move it away (origin-watch then starts with no memory of gone images)"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("state file {path} has version {found}; this build reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error(
        "state file {path} is in use by another origin-watch process (lock {lock} is held{holder}); refusing to start a second writer"
    )]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error("cannot write state file {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(default)]
    watches: BTreeMap<String, WatchState>,
}

/// The state in memory, and the file behind it.
pub struct StateStore {
    path: PathBuf,
    /// Held for the life of a writer; `None` for a read-only store.
    lock: Option<File>,
    data: Mutex<BTreeMap<String, WatchState>>,
    /// One save at a time, taken before the snapshot: passes of several
    /// watches end concurrently in `run`; two writers of one temporary file
    /// would mix their bytes, and the last rename must carry the newest state.
    saving: Mutex<()>,
}

impl StateStore {
    /// Opens the state for writing: takes the single-writer lock (failing at
    /// once if another process holds it), then loads the file.
    pub fn open(path: &Path) -> Result<StateStore, StateError> {
        let write_err = |cause| StateError::Write {
            path: path.to_owned(),
            cause,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(write_err)?;
        }
        let lock_path = lock_path(path);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(write_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&lock_path)
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .map(|holder| format!(" by {holder}"))
                    .unwrap_or_default();
                return Err(StateError::Locked {
                    path: path.to_owned(),
                    lock: lock_path,
                    holder,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(write_err(e)),
        }
        // Who holds it, for the message a second process prints (a pid
        // alone means little from another container or machine).
        let _ = lock.set_len(0);
        let _ = writeln!(lock, "pid {} on {}", std::process::id(), hostname());
        remove_stale_temporaries(path);
        let data = load(path)?;
        Ok(StateStore {
            path: path.to_owned(),
            lock: Some(lock),
            data: Mutex::new(data),
            saving: Mutex::new(()),
        })
    }

    /// Opens the state for reading only (`audit`, `--dry-run`): no lock, and
    /// [`StateStore::save`] does nothing.
    pub fn open_read_only(path: &Path) -> Result<StateStore, StateError> {
        Ok(StateStore {
            path: path.to_owned(),
            lock: None,
            data: Mutex::new(load(path)?),
            saving: Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_writable(&self) -> bool {
        self.lock.is_some()
    }

    /// Replaces a watch's episodes with the result of a pass.
    pub fn put(&self, watch: &str, episodes: WatchState) {
        let mut data = self.data.lock().expect("state lock");
        if episodes.is_empty() {
            data.remove(watch);
        } else {
            data.insert(watch.to_owned(), episodes);
        }
    }

    /// Records one source's episode at once, before its pass ends (a
    /// purge the API has just confirmed), so that a save made while the
    /// pass is still running keeps it.
    pub fn record(&self, watch: &str, src: &str, episode: Episode) {
        self.data
            .lock()
            .expect("state lock")
            .entry(watch.to_owned())
            .or_default()
            .insert(src.to_owned(), episode);
    }

    /// A copy of a watch's episodes, for a pass to work on.
    pub fn get(&self, watch: &str) -> WatchState {
        self.data
            .lock()
            .expect("state lock")
            .get(watch)
            .cloned()
            .unwrap_or_default()
    }

    /// Writes the state atomically. Does nothing on a read-only store.
    pub fn save(&self) -> Result<(), StateError> {
        if self.lock.is_none() {
            return Ok(());
        }
        let _one_at_a_time = self.saving.lock().expect("save lock");
        let bytes = {
            let data = self.data.lock().expect("state lock");
            let file = StateFileRef {
                version: VERSION,
                watches: &data,
            };
            serde_json::to_vec_pretty(&file).expect("state serializes")
        };
        write_atomically(&self.path, &bytes).map_err(|cause| StateError::Write {
            path: self.path.clone(),
            cause,
        })
    }
}

#[derive(Serialize)]
struct StateFileRef<'a> {
    version: u32,
    watches: &'a BTreeMap<String, WatchState>,
}

pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

fn load(path: &Path) -> Result<BTreeMap<String, WatchState>, StateError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(cause) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                cause,
            });
        }
    };
    let file: StateFile = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if file.version != VERSION {
        return Err(StateError::Version {
            path: path.to_owned(),
            found: file.version,
        });
    }
    Ok(file.watches)
}

/// The folder a state file (and its temporaries) lives in.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// This machine's name, for the lock file; empty when it cannot be read.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "an unknown host".to_owned())
}

/// Removes `<state>.tmp-<pid>` files that a writer killed mid-save left
/// behind. Called with the lock held, so no live writer owns one.
fn remove_stale_temporaries(path: &Path) {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let prefix = format!("{name}.tmp-");
    let Ok(entries) = fs::read_dir(folder_of(path)) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Write to a temporary file in the same folder, fsync it, rename it over the
/// target, fsync the folder: a reader sees the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = folder_of(path);
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn episode(streak: u32) -> Episode {
        let t = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        Episode {
            gone_streak: streak,
            first_gone: t,
            last_gone: t,
            last_status: Some(404),
            purged_at: None,
        }
    }

    #[test]
    fn saved_state_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        {
            let s = StateStore::open(&path).unwrap();
            let mut w = WatchState::new();
            w.insert("/a.png".into(), episode(1));
            s.put("site", w);
            s.save().unwrap();
        }
        let s = StateStore::open(&path).unwrap();
        assert_eq!(s.get("site").get("/a.png"), Some(&episode(1)));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
    }

    #[test]
    fn a_second_writer_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let _first = StateStore::open(&path).unwrap();
        let err = StateStore::open(&path)
            .err()
            .expect("second writer refused");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("in use by another origin-watch process"),
            "{msg}"
        );
        // Readers are never refused.
        assert!(StateStore::open_read_only(&path).is_ok());
    }

    #[test]
    fn the_lock_is_released_when_the_holder_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        drop(StateStore::open(&path).unwrap());
        assert!(StateStore::open(&path).is_ok());
    }

    #[test]
    fn read_only_store_never_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let s = StateStore::open_read_only(&path).unwrap();
        let mut w = WatchState::new();
        w.insert("/a.png".into(), episode(1));
        s.put("site", w);
        s.save().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn corrupt_state_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "{ not json").unwrap();
        let msg = StateStore::open(&path).err().unwrap().to_string();
        assert!(
            msg.contains("state.json") && msg.contains("not valid"),
            "{msg}"
        );
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{ not json",
            "left as it was"
        );
    }

    #[test]
    fn a_writer_removes_temporaries_a_killed_writer_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(dir.path().join("state.json.tmp-4242"), "{ half writ").unwrap();
        fs::write(dir.path().join("other.json.tmp-1"), "not ours").unwrap();
        let _s = StateStore::open(&path).unwrap();
        assert!(!dir.path().join("state.json.tmp-4242").exists());
        assert!(dir.path().join("other.json.tmp-1").exists());
        let holder = fs::read_to_string(lock_path(&path)).unwrap();
        assert!(
            holder.starts_with(&format!("pid {} on ", std::process::id())),
            "{holder}"
        );
    }

    #[test]
    fn a_save_replaces_the_file_rather_than_writing_into_it() {
        // Rename, not rewrite: a reader holding the old file still reads
        // the whole old state, so no reader (or crash) ever sees a mix.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let s = StateStore::open(&path).unwrap();
        let mut w = WatchState::new();
        w.insert("/a.png".into(), episode(1));
        s.put("site", w.clone());
        s.save().unwrap();
        let before = fs::read_to_string(&path).unwrap();
        let mut old = File::open(&path).unwrap();
        w.insert("/b.png".into(), episode(2));
        s.put("site", w);
        s.save().unwrap();
        let mut seen = String::new();
        std::io::Read::read_to_string(&mut old, &mut seen).unwrap();
        assert_eq!(seen, before, "the old file was not written into");
        assert!(fs::read_to_string(&path).unwrap().contains("/b.png"));
    }

    #[test]
    fn no_temporary_file_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let s = StateStore::open(&path).unwrap();
        s.save().unwrap();
        s.save().unwrap();
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    }
}
