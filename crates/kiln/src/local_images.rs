//! Opening the store and finding images in it the way docker's CLI does: by name
//! (`name` means `name:latest`), else by (a prefix of) the image id.

use crate::flags::GlobalFlags;
use kiln_oci::export::NamedImage;
use kiln_oci::image::load_image;
use kiln_oci::layer::Compression;
use kiln_oci::store::StoredImage;
use kiln_oci::{Digest, Image, ImageName, Store};
use miette::{miette, Result};

pub fn open_store(global: &GlobalFlags) -> Result<Store> {
    let root = global
        .root
        .clone()
        .unwrap_or_else(kiln_oci::store::default_root);
    Store::open(&root)
        .map_err(|e| miette!("cannot open the image store at {}: {e}", root.display()))
}

/// The manifest of the stored image `target` with every layer's blob in the
/// store: the layers a build made (held as snapshots) are written now with
/// `compression`, once (a blob made before is reused). What archives and pushes
/// take.
pub fn with_blobs(
    store: &Store,
    target: &kiln_oci::BlobRef,
    compression: Compression,
) -> Result<kiln_oci::BlobRef> {
    fetch_left_layers(store, target)?;
    kiln_oci::export::complete_image(store, target, compression)
        .map_err(|e| miette!("writing the layers of the image: {e}"))
}

/// Brings into the store the layers of `target` (each platform's, for an
/// index) that a build left in a registry: a base image's (a `FROM` reads
/// only its manifest and config), or those only a registry build cache had
/// (`kiln build --push`). An archive, a push elsewhere or `kiln analyze`
/// needs their blobs.
pub fn fetch_left_layers(store: &Store, target: &kiln_oci::BlobRef) -> Result<()> {
    let manifests = if kiln_oci::image::media_type::is_index(&target.media_type) {
        kiln_oci::index::read_index(store, target)
            .map_err(|e| miette!("{e}"))?
            .into_iter()
            .filter(|e| e.is_image())
            .map(|e| e.manifest)
            .collect()
    } else {
        vec![target.clone()]
    };
    let mut fetcher = None;
    for manifest in &manifests {
        let image = load_image(store, manifest).map_err(|e| miette!("{e}"))?;
        for layer in image.layers.iter().filter(|l| !store.has_layer(l)) {
            let fetcher = match &mut fetcher {
                Some(f) => f,
                None => fetcher.insert(kiln_builder::SourcesFetcher {
                    registry: kiln_oci::registry::RegistryContext::load(None)
                        .map_err(|e| miette!("reading the registry configuration: {e}"))?,
                }),
            };
            use kiln_builder::BlobFetcher;
            match fetcher.fetch(store, layer) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(miette!(
                        "layer {} of the image is not in the store, and no registry is known to hold it",
                        layer.digest
                    ))
                }
                Err(e) => return Err(miette!("{e}")),
            }
        }
    }
    Ok(())
}

/// A stored image with its index entry.
pub struct Found {
    pub entry: StoredImage,
    pub image: Image,
}

/// Every index entry with its image, in index order.
pub fn all_images(store: &Store) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    for entry in store.images().map_err(|e| miette!("{e}"))? {
        let image = load_image(store, &entry.target).map_err(|e| {
            let name = entry
                .name
                .as_ref()
                .map(|n| n.to_string())
                .unwrap_or_else(|| entry.target.digest.to_string());
            miette!("image {name}: {e}")
        })?;
        out.push(Found { entry, image });
    }
    Ok(out)
}

/// What the user meant by `arg`.
pub enum Target {
    /// A name that exists.
    Name(ImageName, Box<Found>),
    /// An image id (or prefix), with every entry of that image.
    Id(Digest, Vec<Found>),
}

impl Target {
    pub fn image(&self) -> &Image {
        &self.target().image
    }
    /// The index entry found (the first, for an id several names share).
    pub fn target(&self) -> &Found {
        match self {
            Target::Name(_, f) => f,
            Target::Id(_, fs) => &fs[0],
        }
    }
}

impl Found {
    /// The id `kiln images` shows: the image's (its config digest), or for a
    /// multi-platform image the index's digest, as docker's containerd store shows it.
    pub fn id(&self) -> Digest {
        if kiln_oci::image::media_type::is_index(&self.entry.target.media_type) {
            self.entry.target.digest
        } else {
            self.image.id()
        }
    }
}

fn hex_prefix(arg: &str) -> Option<&str> {
    let h = arg.strip_prefix("sha256:").unwrap_or(arg);
    (!h.is_empty() && h.len() <= 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then_some(h)
}

pub fn find(store: &Store, arg: &str) -> Result<Target> {
    let all = all_images(store)?;
    let name: Option<ImageName> = arg.parse().ok();
    if let Some(name) = &name {
        if let Some(pos) = all.iter().position(|f| f.entry.name.as_ref() == Some(name)) {
            let found = all.into_iter().nth(pos).expect("position is in range");
            return Ok(Target::Name(name.clone(), Box::new(found)));
        }
    }
    if let Some(prefix) = hex_prefix(arg) {
        let mut ids: Vec<Digest> = all
            .iter()
            .flat_map(|f| [f.image.id(), f.id()])
            .filter(|id| id.hex().starts_with(prefix))
            .collect();
        ids.sort();
        ids.dedup();
        match ids.len() {
            0 => {}
            1 => {
                let id = ids[0];
                let entries = all
                    .into_iter()
                    .filter(|f| f.image.id() == id || f.id() == id)
                    .collect();
                return Ok(Target::Id(id, entries));
            }
            _ => {
                return Err(miette!(
                    "image id prefix {arg:?} matches more than one image; give more digits"
                ))
            }
        }
    }
    match (name, arg.parse::<ImageName>()) {
        (_, Err(e)) if hex_prefix(arg).is_none() => Err(miette!("{e}")),
        _ => Err(miette!("no such image: {arg}")),
    }
}

/// The images `args` (names or ids) name, as an archive holds them, each with
/// its compressed layer blobs made: a name gives its image; an id gives every
/// name of that image, as docker saves it.
pub fn named_for_export(store: &Store, args: &[String]) -> Result<Vec<NamedImage>> {
    let mut named = Vec::new();
    for arg in args {
        match find(store, arg)? {
            Target::Name(name, found) => named.push(NamedImage {
                name: Some(name),
                target: found.entry.target,
            }),
            Target::Id(_, entries) => named.extend(entries.into_iter().map(|f| NamedImage {
                name: f.entry.name,
                target: f.entry.target,
            })),
        }
    }
    for n in &mut named {
        n.target = with_blobs(store, &n.target, Compression::default())?;
    }
    Ok(named)
}
