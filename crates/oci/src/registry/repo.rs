//! One repository of a registry as a place for content that is not an image to
//! pull as a whole (kiln's build cache): a manifest read by tag, small blobs
//! read into memory, blobs checked, fetched into the store one at a time, and
//! pushed from the store (HEAD first, mounted where kiln knows them to be), and
//! a manifest written under a tag. The same protocol code as `pull` and `push`.

use super::client::{Access, Body, RepoClient};
use super::{Reference, RegistryContext, RegistryError};
use crate::digest::Digest;
use crate::store::{BlobRef, Store};
use ureq::http::{self, StatusCode};

/// A repository of a registry (`REGISTRY/REPOSITORY`).
#[derive(Debug)]
pub struct Repo {
    client: RepoClient,
}

impl Repo {
    /// The repository `reference` names (its tag or digest is not used here).
    pub fn open(ctx: &RegistryContext, reference: &Reference) -> Result<Repo, RegistryError> {
        Ok(Repo {
            client: ctx.client(
                &reference.registry,
                &reference.repository,
                reference.to_string(),
            )?,
        })
    }

    pub fn registry(&self) -> &str {
        &self.client.registry
    }

    pub fn repository(&self) -> &str {
        &self.client.repository
    }

    /// The manifest `reference` (a tag or a digest) names, with its digest;
    /// `None` when the registry has none by that name.
    pub fn manifest(&self, reference: &str) -> Result<Option<(Vec<u8>, Digest)>, RegistryError> {
        match super::pull::fetch_manifest(&self.client, reference, None) {
            Ok((bytes, _, digest)) => Ok(Some((bytes, digest))),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A small blob (at most `limit` bytes), read into memory and checked
    /// against its digest and size.
    pub fn blob_bytes(&self, desc: &BlobRef, limit: u64) -> Result<Vec<u8>, RegistryError> {
        let what = format!("blob {}", desc.digest);
        if desc.size > limit {
            return Err(self.client.protocol(format!(
                "{what}: {} bytes, more than the {limit} kiln reads",
                desc.size
            )));
        }
        let url = self.client.url(&format!("blobs/{}", desc.digest));
        let mut resp = self.client.send(
            http::Method::GET,
            &url,
            &[],
            Body::Empty,
            Access::Pull,
            None,
        )?;
        if resp.status() != StatusCode::OK {
            return Err(self.client.error_from(resp, &what));
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(limit + 1)
            .read_to_vec()
            .map_err(|e| self.client.protocol(format!("{what}: {e}")))?;
        let got = Digest::of(&bytes);
        if got != desc.digest || bytes.len() as u64 != desc.size {
            return Err(self.client.protocol(format!(
                "{what}: the registry sent {} bytes with digest {got}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Whether the repository has the blob (HEAD; nothing is downloaded).
    pub fn has_blob(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let url = self.client.url(&format!("blobs/{digest}"));
        let resp = self.client.send(
            http::Method::HEAD,
            &url,
            &[],
            Body::Empty,
            Access::Pull,
            None,
        )?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.client.error_from(resp, &format!("blob {digest}"))),
        }
    }

    /// Downloads the blob into `store` (digest and size checked; a broken
    /// transfer resumes), and remembers that this repository has it.
    pub fn download(&self, store: &Store, desc: &BlobRef) -> Result<(), RegistryError> {
        super::pull::download_blob(store, &self.client, desc)?;
        super::sources::record(
            store,
            &self.client.registry,
            &self.client.repository,
            &desc.digest,
        );
        Ok(())
    }

    /// [`Repo::download`] of a layer blob that is extracted through `unpacker`
    /// while it streams in (the pull's path, see [`super::unpack`]). Returns
    /// whether it was unpacked (`false`: only stored, e.g. a resumed download,
    /// or the unpacker needed nothing).
    pub fn download_unpacking(
        &self,
        store: &Store,
        desc: &BlobRef,
        diff_id: &Digest,
        unpacker: &dyn super::LayerUnpacker,
    ) -> Result<bool, RegistryError> {
        let unpacked =
            super::pull::download_and_unpack(store, &self.client, desc, diff_id, unpacker)?;
        super::sources::record(
            store,
            &self.client.registry,
            &self.client.repository,
            &desc.digest,
        );
        Ok(unpacked.is_some())
    }

    /// Pushes a stored blob: nothing when the repository has it, a mount when
    /// kiln knows another repository of this registry to have it, else an upload.
    pub fn push_blob(&self, store: &Store, desc: &BlobRef) -> Result<(), RegistryError> {
        super::push::push_blob(
            store,
            &self.client,
            desc,
            &super::push::PushOptions::default(),
        )?;
        super::sources::record(
            store,
            &self.client.registry,
            &self.client.repository,
            &desc.digest,
        );
        Ok(())
    }

    /// Asks the registry to mount the blob from `from` (another repository of
    /// the same registry); whether it did. Nothing is downloaded or uploaded.
    pub fn mount(&self, digest: &Digest, from: &str) -> Result<bool, RegistryError> {
        let url = self.client.url(&format!(
            "blobs/uploads/?mount={digest}&from={}",
            super::client::encode(from)
        ));
        let resp = self.client.send(
            http::Method::POST,
            &url,
            &[],
            Body::Empty,
            Access::Push,
            Some(from),
        )?;
        Ok(resp.status() == StatusCode::CREATED)
    }

    /// Writes `bytes` (a manifest of media type `media`) under `tag`.
    pub fn put_manifest(
        &self,
        media: &str,
        bytes: Vec<u8>,
        tag: &str,
    ) -> Result<(), RegistryError> {
        super::push::put_manifest(&self.client, media, bytes, tag)
    }
}
