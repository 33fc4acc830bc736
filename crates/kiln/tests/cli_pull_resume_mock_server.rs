//! A `kiln pull` killed in the middle of a layer leaves the partial blob in the
//! store, and the next pull continues it with a `Range` request instead of
//! starting over. Against a small registry this test runs on 127.0.0.1.

use crate::util::{kiln, OneFileImage};
use kiln_oci::image::media_type;
use kiln_oci::{Digest, Store};
use kiln_testkit::http::{self, respond, Request};
use kiln_testkit::Kiln;
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Mock {
    addr: String,
    manifest: Vec<u8>,
    blobs: HashMap<String, Vec<u8>>,
    layer: String,
    /// The first request for the layer gets half of it, then nothing more.
    hang_first: bool,
    /// The `Range` header of each request for the layer.
    layer_requests: Mutex<Vec<Option<String>>>,
}

fn handle(mock: &Mock, req: Request, s: &mut TcpStream) {
    let path = req.path.as_str();
    let range = req.header("range").map(str::to_string);
    if path == "/v2/team/app/manifests/1" {
        let ct = ("Content-Type", media_type::OCI_MANIFEST.to_string());
        return respond(s, "200 OK", &[ct], &mock.manifest);
    }
    let Some(data) = path
        .strip_prefix("/v2/team/app/blobs/")
        .and_then(|d| mock.blobs.get(d).map(|b| (d, b)))
    else {
        return respond(s, "404 Not Found", &[], b"{}");
    };
    let (digest, data) = data;
    if digest != mock.layer {
        return respond(s, "200 OK", &[], data);
    }
    let first = {
        let mut seen = mock.layer_requests.lock().unwrap();
        seen.push(range.clone());
        seen.len() == 1
    };
    if first && mock.hang_first {
        // Promise everything, send half, then hang until the client is killed.
        let head = format!(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            data.len()
        );
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&data[..data.len() / 2]);
        let _ = s.flush();
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    match range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok())
    {
        Some(start) if start < data.len() => {
            let cr = format!("bytes {start}-{}/{}", data.len() - 1, data.len());
            respond(
                s,
                "206 Partial Content",
                &[("Content-Range", cr)],
                &data[start..],
            )
        }
        _ => respond(s, "200 OK", &[], data),
    }
}

fn start_mock(hang_first: bool) -> Arc<Mock> {
    let (listener, addr) = http::listen();
    // A layer of 4 MiB that does not compress, so the transfer takes a while.
    let mut content = Vec::with_capacity(4 << 20);
    let mut x: u32 = 99;
    while content.len() < 4 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        content.push((x >> 16) as u8);
    }
    let image = OneFileImage::new(&content, false);
    let (cd, config) = image.config;
    let (ld, layer) = image.layer;
    let mock = Arc::new(Mock {
        addr,
        manifest: image.manifest,
        blobs: HashMap::from([(cd.to_string(), config), (ld.to_string(), layer)]),
        layer: ld.to_string(),
        hang_first,
        layer_requests: Mutex::new(Vec::new()),
    });
    http::serve(listener, mock.clone(), handle);
    mock
}

/// `kiln pull REFERENCE` with a store, an auth file and a config file inside `dir`.
fn pull(dir: &Path, reference: &str) -> Kiln {
    let mut c = kiln();
    c.root(dir.join("root"))
        .args(["pull", reference])
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .env("KILN_CONFIG", dir.join("kiln.json"))
        .env("HOME", dir);
    c
}

fn tmp_files(root: &Path) -> Vec<(String, u64)> {
    std::fs::read_dir(root.join("tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    (e.file_name().to_string_lossy().into_owned(), len)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_killed_pull_is_continued_by_the_next_one() {
    let mock = start_mock(true);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("root");
    let reference = format!("{}/team/app:1", mock.addr);
    let layer_size = mock.blobs[&mock.layer].len() as u64;

    let mut child = pull(d, &reference)
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a good part of the first half is on disk, then kill -9.
    let deadline = Instant::now() + Duration::from_secs(60);
    while tmp_files(&root).iter().all(|(_, len)| *len < 1 << 20) {
        assert!(
            Instant::now() < deadline,
            "nothing downloaded: {:?}",
            tmp_files(&root)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let hex = mock.layer.strip_prefix("sha256:").unwrap();
    let partial = format!("partial-{hex}");
    let files = tmp_files(&root);
    let have = files
        .iter()
        .find(|(name, _)| *name == partial)
        .map(|(_, len)| *len)
        .unwrap_or_else(|| panic!("no {partial} in the store's tmp/: {files:?}"));
    assert!(have >= 1 << 20 && have < layer_size, "{have}");

    pull(d, &reference).ok();
    let requests = mock.layer_requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        [None, Some(format!("bytes={have}-"))],
        "the second pull asks for the rest only"
    );
    let store = Store::open(&root).unwrap();
    assert!(store.has_blob(&mock.layer.parse().unwrap()));
    assert!(store.verify().unwrap().is_ok());
    assert_eq!(store.images().unwrap().len(), 1);
    assert!(tmp_files(&root).is_empty(), "{:?}", tmp_files(&root));
}

/// What a dead pull left may be anything (a power loss can leave zeros): if the
/// continued download does not match its digest, it is fetched once more whole.
#[test]
fn a_partial_blob_that_is_not_the_blobs_start_is_downloaded_again() {
    let mock = start_mock(false);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("root");
    let store = Store::open(&root).unwrap();
    let digest: Digest = mock.layer.parse().unwrap();
    std::fs::write(store.partial_blob_path(&digest), vec![0u8; 1 << 20]).unwrap();
    drop(store);

    pull(d, &format!("{}/team/app:1", mock.addr)).ok();
    let requests = mock.layer_requests.lock().unwrap().clone();
    assert_eq!(requests, [Some(format!("bytes={}-", 1 << 20)), None]);
    let store = Store::open(&root).unwrap();
    assert!(store.verify().unwrap().is_ok());
    assert!(store.has_blob(&digest));
    assert!(tmp_files(&root).is_empty(), "{:?}", tmp_files(&root));
}
