//! `RUN --mount=type=cache` directories: persistence, the three sharing
//! modes, hostile ids, owner and mode. Cross-process behaviour is checked by
//! running this test binary again as a child: the child runs the same test
//! (`cross_process_persistence_and_locking`) with a role in its environment.

use kiln_builder::internal::{CacheMountRequest, CacheMounts};
use kiln_dockerfile::instructions::{CacheSharing, MountSpec};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;

fn req(id: &str, sharing: CacheSharing) -> CacheMountRequest {
    CacheMountRequest {
        sharing,
        ..CacheMountRequest::new(id)
    }
}

const CHILD_ENV: &str = "KILN_TEST_CACHE_CHILD";

/// Held while a child process is spawned, and by the tests that check whether
/// a released lease's lock is free: a child inherits the lock files open at
/// its fork until it execs, and holds their flock locks that long.
static SPAWNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn no_spawning() -> std::sync::MutexGuard<'static, ()> {
    SPAWNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the cross-process test again in a new process, as the child with
/// `role` on the store root.
fn run_child(role: &str, store: &Path) -> std::process::Output {
    let _spawning = no_spawning();
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cross_process_persistence_and_locking",
            "--nocapture",
        ])
        .env(CHILD_ENV, format!("{role}:{}", store.display()))
        .output()
        .expect("run the test binary as a child")
}

/// The child side of the cross-process test, run in the child process.
fn child_role(spec: &str) {
    let (role, store) = spec.split_once(':').unwrap();
    let mounts = CacheMounts::new(Path::new(store));
    match role {
        "write" => {
            let lease = mounts
                .acquire(&req("go-build", CacheSharing::Locked))
                .unwrap();
            std::fs::write(lease.dir().join("from-child"), b"child").unwrap();
        }
        "expect-busy" => {
            let got = mounts
                .try_acquire(&req("go-build", CacheSharing::Locked))
                .unwrap();
            assert!(got.is_none(), "the parent holds the locked cache");
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn cross_process_persistence_and_locking() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child_role(&spec);
    }
    let store = tempfile::tempdir().unwrap();
    let out = run_child("write", store.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));

    let mounts = CacheMounts::new(store.path());
    let lease = mounts
        .acquire(&req("go-build", CacheSharing::Locked))
        .unwrap();
    assert_eq!(
        std::fs::read(lease.dir().join("from-child")).unwrap(),
        b"child"
    );
    // While we hold it, another process cannot take it.
    let out = run_child("expect-busy", store.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    drop(lease);
    // Released: now the child's non-blocking attempt would succeed, so the
    // same role fails.
    let out = run_child("expect-busy", store.path());
    assert!(!out.status.success());
}

#[test]
fn content_persists_across_leases_and_reopened_managers() {
    let store = tempfile::tempdir().unwrap();
    let first = CacheMounts::new(store.path());
    let dir = {
        let lease = first.acquire(&req("npm", CacheSharing::Shared)).unwrap();
        std::fs::write(lease.dir().join("pkg.tgz"), b"cached").unwrap();
        assert!(!lease.is_temporary());
        lease.dir().to_path_buf()
    };
    assert!(dir.starts_with(store.path().join("cache/mounts")));
    let again = CacheMounts::new(store.path());
    for sharing in [
        CacheSharing::Shared,
        CacheSharing::Locked,
        CacheSharing::Private,
    ] {
        let lease = again.acquire(&req("npm", sharing)).unwrap();
        assert_eq!(lease.dir(), dir);
        assert_eq!(
            std::fs::read(lease.dir().join("pkg.tgz")).unwrap(),
            b"cached"
        );
    }
    // Another id is another directory.
    let other = again.acquire(&req("pip", CacheSharing::Shared)).unwrap();
    assert_ne!(other.dir(), dir);
    assert!(!other.dir().join("pkg.tgz").exists());
}

#[test]
fn shared_users_get_the_same_directory_at_once() {
    let _no_spawning = no_spawning();
    let store = tempfile::tempdir().unwrap();
    let mounts = CacheMounts::new(store.path());
    let a = mounts.acquire(&req("apt", CacheSharing::Shared)).unwrap();
    let b = mounts
        .try_acquire(&req("apt", CacheSharing::Shared))
        .unwrap()
        .expect("shared users do not wait for each other");
    assert_eq!(a.dir(), b.dir());
    // A locked user has to wait for the shared ones.
    assert!(mounts
        .try_acquire(&req("apt", CacheSharing::Locked))
        .unwrap()
        .is_none());
    drop(a);
    drop(b);
    assert!(mounts
        .try_acquire(&req("apt", CacheSharing::Locked))
        .unwrap()
        .is_some());
}

#[test]
fn locked_blocks_a_second_user_until_the_first_releases() {
    let _no_spawning = no_spawning();
    let store = tempfile::tempdir().unwrap();
    let mounts = CacheMounts::new(store.path());
    let first = mounts.acquire(&req("cargo", CacheSharing::Locked)).unwrap();
    assert!(mounts
        .try_acquire(&req("cargo", CacheSharing::Locked))
        .unwrap()
        .is_none());
    assert!(mounts
        .try_acquire(&req("cargo", CacheSharing::Shared))
        .unwrap()
        .is_none());

    // Event order, recorded by both sides through one channel: the waiter
    // can only acquire after the holder has released.
    let (tx, rx) = mpsc::channel::<&'static str>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let waiter = {
        let mounts = mounts.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            go_rx.recv().unwrap();
            let lease = mounts.acquire(&req("cargo", CacheSharing::Locked)).unwrap();
            tx.send("acquired").unwrap();
            std::fs::write(lease.dir().join("by-waiter"), b"x").unwrap();
        })
    };
    std::fs::write(first.dir().join("by-first"), b"x").unwrap();
    go_tx.send(()).unwrap();
    tx.send("releasing").unwrap();
    drop(first);
    waiter.join().unwrap();
    drop(tx);
    let order: Vec<_> = rx.iter().collect();
    assert_eq!(order, vec!["releasing", "acquired"]);
    let lease = mounts.acquire(&req("cargo", CacheSharing::Locked)).unwrap();
    assert!(lease.dir().join("by-first").exists());
    assert!(lease.dir().join("by-waiter").exists());
}

#[test]
fn private_gets_a_fresh_directory_only_while_the_main_one_is_busy() {
    let _no_spawning = no_spawning();
    let store = tempfile::tempdir().unwrap();
    let mounts = CacheMounts::new(store.path());
    let main = mounts
        .acquire(&req("ccache", CacheSharing::Private))
        .unwrap();
    assert!(!main.is_temporary());
    std::fs::write(main.dir().join("obj"), b"o").unwrap();

    let fresh = mounts
        .acquire(&req("ccache", CacheSharing::Private))
        .unwrap();
    assert!(fresh.is_temporary());
    assert_ne!(fresh.dir(), main.dir());
    assert!(fresh.dir().starts_with(mounts.entry_dir("ccache")));
    assert!(
        !fresh.dir().join("obj").exists(),
        "a fresh directory is empty"
    );
    let fresh2 = mounts
        .try_acquire(&req("ccache", CacheSharing::Private))
        .unwrap()
        .unwrap();
    assert_ne!(fresh2.dir(), fresh.dir());
    assert_ne!(fresh2.dir(), main.dir());
    let fresh_dir = fresh.dir().to_path_buf();
    drop(fresh);
    assert!(
        !fresh_dir.exists(),
        "a private fresh directory is discarded"
    );
    drop(fresh2);

    let main_dir = main.dir().to_path_buf();
    drop(main);
    let again = mounts
        .acquire(&req("ccache", CacheSharing::Private))
        .unwrap();
    assert!(!again.is_temporary());
    assert_eq!(again.dir(), main_dir);
    assert!(again.dir().join("obj").exists());
}

#[test]
fn hostile_ids_stay_under_the_cache_root() {
    let store = tempfile::tempdir().unwrap();
    let mounts = CacheMounts::new(store.path());
    let root = store.path().join("cache/mounts");
    let mut dirs = Vec::new();
    for id in ["../../etc", "/", "..", ".", "a/../../b", "x\0y", ""] {
        let lease = mounts.acquire(&req(id, CacheSharing::Shared)).unwrap();
        let dir = lease.dir().to_path_buf();
        assert_eq!(dir.parent().unwrap().parent().unwrap(), root, "{id:?}");
        assert_eq!(
            dir.canonicalize()
                .unwrap()
                .parent()
                .unwrap()
                .parent()
                .unwrap(),
            root.canonicalize().unwrap()
        );
        std::fs::write(dir.join("marker"), id).unwrap();
        dirs.push(dir);
    }
    dirs.sort();
    dirs.dedup();
    assert_eq!(dirs.len(), 7, "every id has its own directory");
    // Nothing was written outside the store.
    assert!(!store.path().join("etc").exists());
    assert!(!Path::new("/marker").exists());
}

#[test]
fn owner_and_mode_apply_on_first_use_only() {
    let store = tempfile::tempdir().unwrap();
    let mounts = CacheMounts::new(store.path());
    let r = CacheMountRequest {
        uid: 1234,
        gid: 5678,
        mode: 0o700,
        ..CacheMountRequest::new("owned")
    };
    let lease = mounts.acquire(&r).unwrap();
    let md = std::fs::metadata(lease.dir()).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 5678, 0o700)
    );
    // A private user while busy gets a fresh dir with the same owner/mode.
    let fresh = mounts
        .acquire(&CacheMountRequest {
            sharing: CacheSharing::Private,
            ..r.clone()
        })
        .unwrap();
    assert!(fresh.is_temporary());
    let md = std::fs::metadata(fresh.dir()).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 5678, 0o700)
    );
    drop(fresh);
    drop(lease);
    // Defaults (0:0 0755) for a new id; an existing dir is left as it is.
    let d = mounts.acquire(&CacheMountRequest::new("plain")).unwrap();
    let md = std::fs::metadata(d.dir()).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (0, 0, 0o755));
    let again = mounts.acquire(&CacheMountRequest::new("owned")).unwrap();
    let md = std::fs::metadata(again.dir()).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 5678, 0o700)
    );
}

#[test]
fn request_from_a_dockerfile_mount() {
    let resolve = |raw: &str| {
        MountSpec::parse(raw)
            .unwrap()
            .resolve(&mut |w: &str| Ok(w.to_string()))
            .unwrap()
    };
    let r = CacheMountRequest::from_mount(&resolve("type=cache,target=/root/.cache")).unwrap();
    assert_eq!(r, CacheMountRequest::new("/root/.cache"));
    let r = CacheMountRequest::from_mount(&resolve(
        "type=cache,id=gomod,target=/go/pkg,sharing=locked,uid=1000,gid=1001,mode=0700",
    ))
    .unwrap();
    assert_eq!(
        r,
        CacheMountRequest {
            id: "gomod".into(),
            sharing: CacheSharing::Locked,
            uid: 1000,
            gid: 1001,
            mode: 0o700,
            base: "owner 1000:1001 mode 700".into(),
        }
    );
    assert!(CacheMountRequest::from_mount(&resolve("type=tmpfs,target=/t")).is_none());
}

/// BuildKit keys a cache by its id and what it starts from: given uid/gid/mode
/// make a cache of their own (unless `source=` names a subdirectory, when they
/// are ignored), and a seed fills a new directory once.
#[test]
fn owner_options_key_the_cache_and_a_seed_fills_it_once() {
    let resolve = |raw: &str| {
        let m = MountSpec::parse(raw)
            .unwrap()
            .resolve(&mut |w: &str| Ok(w.to_string()))
            .unwrap();
        CacheMountRequest::from_mount(&m).unwrap()
    };
    let plain = resolve("type=cache,target=/c");
    let owned = resolve("type=cache,target=/c,uid=1001,gid=1002,mode=0751");
    let mode_only = resolve("type=cache,target=/c,mode=0700");
    let sourced = resolve("type=cache,target=/c,source=sel,uid=5");
    assert_eq!(plain.base, "");
    assert_eq!(owned.base, "owner 1001:1002 mode 751");
    assert_eq!((owned.uid, owned.gid, owned.mode), (1001, 1002, 0o751));
    assert_eq!(mode_only.base, "owner 0:0 mode 700");
    assert_eq!(sourced, plain, "uid is ignored with source=");

    let store = tempfile::tempdir().unwrap();
    let mounts = CacheMounts::new(store.path());
    assert_eq!(mounts.entry_dir_of(&plain), mounts.entry_dir("/c"));
    assert_ne!(mounts.entry_dir_of(&owned), mounts.entry_dir_of(&plain));
    assert_ne!(mounts.entry_dir_of(&owned), mounts.entry_dir_of(&mode_only));

    let calls = std::sync::atomic::AtomicUsize::new(0);
    let seed = |dir: &Path| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::fs::write(dir.join("seeded"), "x")
    };
    let seeded = CacheMountRequest {
        base: "from stage".into(),
        ..plain.clone()
    };
    let lease = mounts.acquire_seeded(&seeded, Some(&seed)).unwrap();
    assert!(lease.dir().join("seeded").is_file());
    drop(lease);
    let lease = mounts.acquire_seeded(&seeded, Some(&seed)).unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(lease.subdir("seeded").unwrap().is_file());
    assert!(lease.subdir("missing").is_err());
    std::os::unix::fs::symlink("/etc", lease.dir().join("out")).unwrap();
    assert!(
        lease.subdir("out").is_err(),
        "a link to /etc stays in the cache"
    );
}
