//! A session's recording in asciicast v2 (the format the `asciinema` player reads): a header
//! line (`version`, `width`, `height`, `timestamp`, `env.TERM`), then one JSON array per
//! event: `[seconds since the start, "o", text]` for output, `"r"` for a resize
//! (`"COLSxROWS"`) and `"m"` for a marker (used once, to say why the recording stopped).
//!
//! Only output is recorded, never input: what a user types that should be seen is echoed by
//! the terminal (and so recorded as output), while a prompt that turns echo off (a password)
//! is exactly what must not end up in a file.
//!
//! The file is written by the session's reader task through a buffer, flushed about every
//! second and at the end. It stops growing at `terminals.recording-max-bytes` and when the
//! state directory's disk would fall below `storage.min-free-disk` (the writes count against
//! that floor like every stored byte); the marker event says which.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::Result;
use crate::util::disk::DiskFloor;

/// Room kept for the marker that says why recording stopped.
const MARKER_ROOM: u64 = 160;

pub struct Recording {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    started: Instant,
    written: u64,
    max: u64,
    /// Output bytes that end in the middle of a UTF-8 character, kept for the next event.
    partial: Vec<u8>,
    stopped: bool,
    truncated: bool,
}

/// The header's fields.
pub struct Header<'a> {
    pub cols: u16,
    pub rows: u16,
    pub timestamp: i64,
    pub term: &'a str,
    pub title: &'a str,
}

impl Recording {
    /// Creates `path` (refused when the disk is at its floor) and writes the header.
    pub fn create(path: &Path, header: &Header, max: u64, floor: &DiskFloor) -> Result<Recording> {
        let line = serde_json::json!({
            "version": 2,
            "width": header.cols,
            "height": header.rows,
            "timestamp": header.timestamp,
            "title": header.title,
            "env": {"TERM": header.term},
        })
        .to_string();
        floor.ensure(line.len() as u64 + 1)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        let mut rec = Recording {
            path: path.to_owned(),
            file: std::io::BufWriter::new(file),
            started: Instant::now(),
            written: 0,
            max,
            partial: Vec::new(),
            stopped: false,
            truncated: false,
        };
        rec.line(&line)?;
        Ok(rec)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far, and whether it stopped before the session's end.
    pub fn size(&self) -> (u64, bool) {
        (self.written, self.truncated)
    }

    fn line(&mut self, line: &str) -> std::io::Result<()> {
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.written += line.len() as u64 + 1;
        Ok(())
    }

    fn event(&mut self, kind: &str, data: &str, floor: &DiskFloor) {
        if self.stopped {
            return;
        }
        let t = self.started.elapsed().as_secs_f64();
        let line = serde_json::json!([(t * 1e6).round() / 1e6, kind, data]).to_string();
        let len = line.len() as u64 + 1;
        let why = if self.written + len + MARKER_ROOM > self.max {
            Some("recording stopped: terminals.recording-max-bytes reached")
        } else if floor.ensure(len).is_err() {
            Some("recording stopped: the disk is at storage.min-free-disk")
        } else {
            None
        };
        if let Some(why) = why {
            let marker = serde_json::json!([(t * 1e6).round() / 1e6, "m", why]).to_string();
            let _ = self.line(&marker);
            self.stopped = true;
            self.truncated = true;
            let _ = self.file.flush();
            return;
        }
        if let Err(e) = self.line(&line) {
            tracing::warn!(recording = %self.path.display(), error = %e, "cannot write a terminal recording; it stops here");
            self.stopped = true;
            self.truncated = true;
        }
    }

    /// Records output, keeping an unfinished UTF-8 character for the next call (asciicast
    /// events are text; bytes that are not UTF-8 become U+FFFD).
    pub fn output(&mut self, bytes: &[u8], floor: &DiskFloor) {
        let mut data = std::mem::take(&mut self.partial);
        data.extend_from_slice(bytes);
        let mut text = String::new();
        let mut rest = &data[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    text.push_str(s);
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // `good` is valid UTF-8: it ends at `valid_up_to`.
                    text.push_str(std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            text.push('\u{FFFD}');
                            rest = &bad[n..];
                        }
                        None => {
                            self.partial = bad.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        if !text.is_empty() {
            self.event("o", &text, floor);
        }
    }

    /// Records a resize.
    pub fn resize(&mut self, cols: u16, rows: u16, floor: &DiskFloor) {
        self.event("r", &format!("{cols}x{rows}"), floor);
    }

    pub fn flush(&mut self) {
        let _ = self.file.flush();
    }

    /// Flushes and syncs the file; gives back its size and whether it was cut short.
    pub fn finish(mut self) -> (u64, bool) {
        let _ = self.file.flush();
        if let Ok(f) = self.file.get_ref().try_clone() {
            let _ = f.sync_data();
        }
        (self.written, self.truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_is_asciicast_v2_and_stops_at_its_bound_with_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let live = std::sync::Arc::new(crate::config::LiveConfig::new(Default::default()));
        let floor = DiskFloor::new(live, dir.path().to_owned());
        let path = dir.path().join("t.cast");
        let header = Header {
            cols: 80,
            rows: 24,
            timestamp: 1_700_000_000,
            term: "xterm-256color",
            title: "sh",
        };
        let mut rec = Recording::create(&path, &header, 1024, &floor).unwrap();
        rec.output(b"hi \xc3", &floor);
        rec.output(b"\xa9 \xff!", &floor);
        rec.resize(100, 30, &floor);
        for _ in 0..100 {
            rec.output(b"0123456789", &floor);
        }
        let (size, truncated) = rec.finish();
        assert!(truncated);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(size, text.len() as u64);
        assert!(size <= 1024, "{size}");
        let mut lines = text.lines();
        let head: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(head["version"], 2);
        assert_eq!(head["width"], 80);
        assert_eq!(head["env"]["TERM"], "xterm-256color");
        let events: Vec<serde_json::Value> =
            lines.map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(events[0][1], "o");
        assert_eq!(events[0][2], "hi ");
        assert_eq!(events[1][2], "é \u{FFFD}!");
        assert_eq!(events[2][1], "r");
        assert_eq!(events[2][2], "100x30");
        let last = events.last().unwrap();
        assert_eq!(last[1], "m");
        assert!(last[2].as_str().unwrap().contains("recording-max-bytes"));
    }
}
