//! kiln-sandbox: runs one process in Linux namespaces over a rootfs (overlay
//! mounts, user namespaces, /proc, /dev, mounts, network mode). Knows nothing
//! about images or caching.
