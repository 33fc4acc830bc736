//! Unpacking layers while a pull downloads them: the blob's bytes go to the
//! store's blob writer (sha256 of the blob) and, through a small bounded channel,
//! to an extracting thread (decompress → sha256 of the tar → files), so a cold
//! build does not read the base image a second time to unpack it.
//!
//! Where the layers go is the caller's: the snapshot store lives in the builder
//! crate, which implements [`LayerUnpacker`]. A layer's directory is named only
//! after both digests matched (the blob's, checked by the blob writer, and the
//! diff_id its image's config gives it); on any error the target is dropped, which
//! discards what was extracted.

use crate::digest::Digest;
use crate::layer::ApplyOptions;
use crate::store::BlobRef;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Chunks in flight between the download and the extracting thread: enough to
/// ride out short stalls on either side, little memory (a few MiB per layer).
const CHANNEL_CHUNKS: usize = 4;
/// Bytes gathered before they are passed on: the HTTP reader returns a few KiB
/// at a time, and a hand-over per read costs two thread switches, which on a
/// loaded machine made the streamed extraction slower than download-then-extract.
const CHUNK: usize = 1 << 20;

/// Receives the layers of a pull as they download.
pub trait LayerUnpacker: Sync {
    /// How the layers are extracted (whiteouts, owners).
    fn options(&self) -> ApplyOptions;
    /// A directory to extract the layer with this diff_id into, held for this
    /// pull alone until [`UnpackTarget::commit`] or drop (dropping it discards
    /// what was extracted); `None` if the layer needs no unpacking (its
    /// snapshot exists already).
    fn begin(&self, diff_id: &Digest) -> Result<Option<Box<dyn UnpackTarget>>, String>;
}

/// Where one layer is being extracted.
pub trait UnpackTarget: Send {
    /// The (empty at first) directory to extract into.
    fn dir(&self) -> &Path;
    /// Names the extracted layer: called only after both digests matched.
    fn commit(self: Box<Self>) -> Result<(), String>;
}

/// The download side of the channel to an extracting thread.
pub(crate) struct Tee {
    tx: Option<SyncSender<Vec<u8>>>,
    pending: Vec<u8>,
    /// Set when the stream stopped being the blob from its first byte on (a
    /// download resumed or restarted): the extraction is then redone from
    /// the stored blob.
    pub(crate) abandoned: bool,
}

impl Tee {
    /// A tee that passes nothing on.
    pub(crate) fn none() -> Tee {
        Tee {
            tx: None,
            pending: Vec::new(),
            abandoned: false,
        }
    }

    /// A tee and the reader its bytes come out of.
    pub(crate) fn channel() -> (Tee, ChannelReader) {
        let (tx, rx) = sync_channel(CHANNEL_CHUNKS);
        (
            Tee {
                tx: Some(tx),
                pending: Vec::with_capacity(CHUNK),
                abandoned: false,
            },
            ChannelReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            },
        )
    }

    /// Passes `bytes` on (blocking while the extractor is behind). An extractor
    /// that stopped reading (it failed, or needs no more) gets nothing more;
    /// its result says why.
    pub(crate) fn send(&mut self, bytes: &[u8]) {
        if self.tx.is_none() {
            return;
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= CHUNK {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK));
        if let Some(tx) = &self.tx {
            if tx.send(chunk).is_err() {
                self.tx = None;
            }
        }
    }

    /// The bytes written from now on are not the continuation of what was
    /// sent: stop passing them on.
    pub(crate) fn abandon(&mut self) {
        self.pending = Vec::new();
        if self.tx.take().is_some() {
            self.abandoned = true;
        }
    }

    /// Ends the stream (the extractor sees its end).
    pub(crate) fn finish(&mut self) {
        self.flush();
        self.tx = None;
    }
}

/// The extracting thread's end of a [`Tee`]: the stream ends when the tee is
/// finished or dropped.
pub(crate) struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The manifest's layer blobs with the diff_ids the config (stored, at
/// `config`) gives them, in order; `None` if the two lists do not pair up (the
/// build reports that; the pull then only downloads).
pub(crate) fn layer_diff_ids(manifest: &[u8], config: &[u8]) -> Option<Vec<(Digest, Digest)>> {
    let m: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    let c: serde_json::Value = serde_json::from_slice(config).ok()?;
    let digests = |v: Option<&serde_json::Value>| -> Option<Vec<Digest>> {
        v?.as_array()?
            .iter()
            .map(|x| x.as_str()?.parse().ok())
            .collect()
    };
    let layers: Vec<Digest> = m
        .get("layers")?
        .as_array()?
        .iter()
        .map(|l| l.get("digest")?.as_str()?.parse().ok())
        .collect::<Option<_>>()?;
    let diff_ids = digests(c.get("rootfs").and_then(|r| r.get("diff_ids")))?;
    (layers.len() == diff_ids.len()).then(|| layers.into_iter().zip(diff_ids).collect())
}

/// The manifest's config descriptor.
pub(crate) fn config_of(manifest: &[u8]) -> Option<BlobRef> {
    let m: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    serde_json::from_value(m.get("config")?.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What goes into the tee comes out of the reader in order; abandoning
    /// ends the stream and says so; an extractor that went away does not
    /// block the download.
    #[test]
    fn tee_passes_bytes_through_and_stops_cleanly() {
        let (mut tee, mut reader) = Tee::channel();
        let t = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).unwrap();
            all
        });
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for c in data.chunks(777) {
            tee.send(c);
        }
        tee.finish();
        assert_eq!(t.join().unwrap(), data);
        assert!(!tee.abandoned);

        let (mut tee, reader) = Tee::channel();
        drop(reader);
        let block = vec![1u8; 100_000];
        for _ in 0..200 {
            tee.send(&block); // would block forever if it waited for a reader
        }
        tee.abandon();
        assert!(!tee.abandoned, "the reader had gone: nothing to redo");

        let (mut tee, _reader) = Tee::channel();
        tee.send(b"x");
        tee.abandon();
        assert!(tee.abandoned);
    }

    #[test]
    fn diff_ids_pair_with_layers_only_when_the_counts_agree() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let m = format!(
            r#"{{"config":{{"mediaType":"x","digest":"{a}","size":1}},"layers":[{{"digest":"{a}"}}]}}"#
        );
        let c = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{b}"]}}}}"#);
        assert_eq!(
            layer_diff_ids(m.as_bytes(), c.as_bytes()),
            Some(vec![(a, b)])
        );
        let c2 = format!(r#"{{"rootfs":{{"diff_ids":["{b}","{a}"]}}}}"#);
        assert_eq!(layer_diff_ids(m.as_bytes(), c2.as_bytes()), None);
        assert_eq!(config_of(m.as_bytes()).unwrap().digest, a);
    }
}
