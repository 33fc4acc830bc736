//! OCI whiteouts (the AUFS convention the image spec adopted): the names a layer
//! tar uses for deletions. Their overlayfs counterparts are in [`super::overlay`].

/// `.wh.<name>` in a layer deletes `<name>` from the layers below.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// `.wh..wh..opq` in a directory hides everything the lower layers had in it.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Names starting with `.wh..wh.` are AUFS metadata (`.wh..wh.plnk`, …), never files.
pub const META_PREFIX: &[u8] = b".wh..wh.";

/// What a tar entry's final name component means.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// Not a whiteout: an ordinary entry.
    None,
    /// `.wh..wh..opq`: the directory is opaque.
    Opaque,
    /// `.wh.<name>`: delete `<name>`.
    Delete(&'a [u8]),
    /// Some other `.wh..wh.*` AUFS metadata entry: ignored.
    Meta,
}

pub fn classify(base: &[u8]) -> Whiteout<'_> {
    if base == OPAQUE_MARKER {
        Whiteout::Opaque
    } else if base.starts_with(META_PREFIX) {
        Whiteout::Meta
    } else if let Some(name) = base.strip_prefix(WHITEOUT_PREFIX) {
        Whiteout::Delete(name)
    } else {
        Whiteout::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_whiteout_names() {
        assert_eq!(classify(b"file"), Whiteout::None);
        assert_eq!(classify(b".wh.file"), Whiteout::Delete(b"file"));
        assert_eq!(classify(b".wh..wh..opq"), Whiteout::Opaque);
        assert_eq!(classify(b".wh..wh.plnk"), Whiteout::Meta);
        assert_eq!(classify(b".whfile"), Whiteout::None);
    }
}
