//! Where a cache is kept: a registry tag ([`RegistryBackend`]) or an OCI layout
//! directory ([`LocalBackend`]), behind one small trait.

use super::spec::CacheLocation;
use kiln_oci::digest::Digest;
use kiln_oci::image::media_type;
use kiln_oci::registry::{Reference, RegistryContext, Repo};
use kiln_oci::store::{BlobRef, Store};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The largest cache config kiln reads.
pub const MAX_CONFIG_SIZE: u64 = 64 << 20;

/// A place a cache is read from and written to. Errors are messages (they
/// become warnings or one located error of the flag).
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The cache manifest under the tag, with its digest; `None` when there is none.
    fn read_manifest(&self) -> Result<Option<(Vec<u8>, Digest)>, String>;
    /// A small blob (the config), checked against its digest.
    fn read_blob(&self, desc: &BlobRef) -> Result<Vec<u8>, String>;
    /// Whether the blob is there (nothing is downloaded).
    fn has_blob(&self, desc: &BlobRef) -> Result<bool, String>;
    /// Copies the blob into the store (checked against its digest).
    fn fetch(&self, store: &Store, desc: &BlobRef) -> Result<(), String>;
    /// Makes a blob of `store` present here (nothing is sent when it is).
    fn push_blob(&self, store: &Store, desc: &BlobRef) -> Result<(), String>;
    /// Makes the blob present here without it being in the store, when this
    /// backend can take it straight from `from` (a registry mount); whether it did.
    fn copy_from(&self, _from: &dyn Backend, _desc: &BlobRef) -> Result<bool, String> {
        Ok(false)
    }
    /// Writes `bytes` (an OCI image manifest) under the tag.
    fn write_manifest(&self, bytes: Vec<u8>) -> Result<(), String>;
    /// Holds other writers of this cache off until dropped, where the backend can.
    fn lock(&self) -> Result<Option<fs::File>, String> {
        Ok(None)
    }
    /// Whether another writer may change the tag between a read and a write
    /// (then an export reads it again after writing).
    fn racy(&self) -> bool;
    /// The repository, for a registry.
    fn registry_repo(&self) -> Option<&Repo> {
        None
    }
}

/// Opens the backend of `location`.
pub fn open(location: &CacheLocation, ctx: &RegistryContext) -> Result<Box<dyn Backend>, String> {
    match location {
        CacheLocation::Registry(r) => {
            let reference = Reference::parse(r).map_err(|e| e.to_string())?;
            let repo = Repo::open(ctx, &reference).map_err(|e| e.to_string())?;
            Ok(Box::new(RegistryBackend {
                tag: reference.manifest_reference(),
                repo,
            }))
        }
        CacheLocation::Local { dir, tag } => Ok(Box::new(LocalBackend {
            dir: dir.clone(),
            tag: tag.clone(),
        })),
    }
}

#[derive(Debug)]
pub struct RegistryBackend {
    repo: Repo,
    tag: String,
}

impl Backend for RegistryBackend {
    fn read_manifest(&self) -> Result<Option<(Vec<u8>, Digest)>, String> {
        self.repo.manifest(&self.tag).map_err(|e| e.to_string())
    }

    fn read_blob(&self, desc: &BlobRef) -> Result<Vec<u8>, String> {
        self.repo
            .blob_bytes(desc, MAX_CONFIG_SIZE)
            .map_err(|e| e.to_string())
    }

    fn has_blob(&self, desc: &BlobRef) -> Result<bool, String> {
        self.repo.has_blob(&desc.digest).map_err(|e| e.to_string())
    }

    fn fetch(&self, store: &Store, desc: &BlobRef) -> Result<(), String> {
        self.repo.download(store, desc).map_err(|e| e.to_string())
    }

    fn push_blob(&self, store: &Store, desc: &BlobRef) -> Result<(), String> {
        self.repo.push_blob(store, desc).map_err(|e| e.to_string())
    }

    fn copy_from(&self, from: &dyn Backend, desc: &BlobRef) -> Result<bool, String> {
        let Some(src) = from.registry_repo() else {
            return Ok(false);
        };
        if src.registry() != self.repo.registry() {
            return Ok(false);
        }
        if src.repository() == self.repo.repository() {
            return self.has_blob(desc);
        }
        self.repo
            .mount(&desc.digest, src.repository())
            .map_err(|e| e.to_string())
    }

    fn write_manifest(&self, bytes: Vec<u8>) -> Result<(), String> {
        self.repo
            .put_manifest(media_type::OCI_MANIFEST, bytes, &self.tag)
            .map_err(|e| e.to_string())
    }

    fn racy(&self) -> bool {
        true
    }

    fn registry_repo(&self) -> Option<&Repo> {
        Some(&self.repo)
    }
}

/// An OCI image layout directory; the cache manifest is the `index.json` entry
/// whose `org.opencontainers.image.ref.name` is the tag.
#[derive(Debug)]
pub struct LocalBackend {
    dir: PathBuf,
    tag: String,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

impl LocalBackend {
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    fn index(&self) -> Result<Option<serde_json::Value>, String> {
        let p = self.dir.join("index.json");
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }

    /// Writes `data` to `path` through a temporary file in the same directory.
    fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        tmp.write_all(data)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        tmp.persist(path)
            .map_err(|e| format!("{}: {}", path.display(), e.error))?;
        Ok(())
    }
}

impl Backend for LocalBackend {
    fn read_manifest(&self) -> Result<Option<(Vec<u8>, Digest)>, String> {
        let Some(index) = self.index()? else {
            return Ok(None);
        };
        let entry = index
            .get("manifests")
            .and_then(|m| m.as_array())
            .and_then(|m| {
                m.iter()
                    .find(|e| e["annotations"][REF_NAME].as_str() == Some(self.tag.as_str()))
            });
        let Some(entry) = entry else {
            return Ok(None);
        };
        let desc: BlobRef = serde_json::from_value(entry.clone())
            .map_err(|e| format!("index.json entry {}: {e}", self.tag))?;
        let bytes = self.read_blob(&desc)?;
        Ok(Some((bytes, desc.digest)))
    }

    fn read_blob(&self, desc: &BlobRef) -> Result<Vec<u8>, String> {
        let p = self.blob_path(&desc.digest);
        let mut data = Vec::new();
        fs::File::open(&p)
            .and_then(|f| f.take(MAX_CONFIG_SIZE + 1).read_to_end(&mut data))
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if Digest::of(&data) != desc.digest {
            return Err(format!(
                "{}: the content does not match its digest",
                p.display()
            ));
        }
        Ok(data)
    }

    fn has_blob(&self, desc: &BlobRef) -> Result<bool, String> {
        Ok(fs::metadata(self.blob_path(&desc.digest)).is_ok_and(|m| m.len() == desc.size))
    }

    fn fetch(&self, store: &Store, desc: &BlobRef) -> Result<(), String> {
        let p = self.blob_path(&desc.digest);
        let mut f = fs::File::open(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mut w = store.blob_writer().map_err(|e| e.to_string())?;
        w.expect(desc.digest);
        std::io::copy(&mut f, &mut w).map_err(|e| format!("{}: {e}", p.display()))?;
        w.commit()
            .map_err(|e| format!("{}: {e}", p.display()))
            .map(|_| ())
    }

    fn push_blob(&self, store: &Store, desc: &BlobRef) -> Result<(), String> {
        if self.has_blob(desc)? {
            return Ok(());
        }
        let dest = self.blob_path(&desc.digest);
        let dir = dest.parent().unwrap_or(&self.dir).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut src = store.open_blob(&desc.digest).map_err(|e| e.to_string())?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::io::copy(&mut src, &mut tmp).map_err(|e| format!("{}: {e}", dest.display()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| format!("{}: {e}", dest.display()))?;
        tmp.persist(&dest)
            .map_err(|e| format!("{}: {}", dest.display(), e.error))?;
        Ok(())
    }

    fn write_manifest(&self, bytes: Vec<u8>) -> Result<(), String> {
        let digest = Digest::of(&bytes);
        let size = bytes.len() as u64;
        Self::write_atomic(&self.blob_path(&digest), &bytes)?;
        let layout = self.dir.join("oci-layout");
        if !layout.exists() {
            Self::write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let mut index = self.index()?.unwrap_or_else(|| {
            serde_json::json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": []})
        });
        let entry = serde_json::json!({
            "mediaType": media_type::OCI_MANIFEST,
            "digest": digest,
            "size": size,
            "annotations": { REF_NAME: self.tag },
        });
        let manifests = index
            .get_mut("manifests")
            .and_then(|m| m.as_array_mut())
            .ok_or_else(|| format!("{}: index.json has no manifests", self.dir.display()))?;
        manifests.retain(|e| e["annotations"][REF_NAME].as_str() != Some(self.tag.as_str()));
        manifests.push(entry);
        let bytes = serde_json::to_vec_pretty(&index).unwrap_or_default();
        Self::write_atomic(&self.dir.join("index.json"), &bytes)
    }

    fn lock(&self) -> Result<Option<fs::File>, String> {
        fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let p = self.dir.join(".kiln-cache.lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        loop {
            match rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => return Ok(Some(f)),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(format!("{}: {e}", p.display())),
            }
        }
    }

    fn racy(&self) -> bool {
        false
    }
}
