//! Doing one fallible thing to each of several items on a few threads: layers
//! compressed for an export, blobs fetched from or pushed to a cache.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs `f` on every item, on up to `workers` threads taking the next item as
/// they finish one. After the first error no new item is started; that error
/// (the first of the threads', in thread order) is returned. A thread that
/// panics gives `panicked()`.
pub fn try_for_each<T: Sync, E: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> Result<(), E> + Sync,
    panicked: impl Fn() -> E,
) -> Result<(), E> {
    let workers = workers.clamp(1, items.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Result<(), E>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| loop {
                    if failed.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    let Some(item) = items.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        return Ok(());
                    };
                    if let Err(e) = f(item) {
                        failed.store(true, Ordering::SeqCst);
                        return Err(e);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(panicked())))
            .collect()
    });
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn every_item_once_then_errors_stop_new_items() {
        let seen = Mutex::new(Vec::new());
        let items: Vec<u32> = (0..50).collect();
        let r: Result<(), String> = try_for_each(
            &items,
            4,
            |i| {
                seen.lock().unwrap().push(*i);
                Ok(())
            },
            || "panicked".into(),
        );
        assert!(r.is_ok());
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, items);

        let started = AtomicUsize::new(0);
        let r = try_for_each(
            &items,
            1,
            |i| {
                started.fetch_add(1, Ordering::SeqCst);
                if *i == 3 {
                    Err(format!("item {i}"))
                } else {
                    Ok(())
                }
            },
            || "panicked".to_string(),
        );
        assert_eq!(r, Err("item 3".to_string()));
        assert_eq!(started.load(Ordering::SeqCst), 4);

        let none: [u32; 0] = [];
        assert_eq!(try_for_each(&none, 4, |_| Err(()), || ()), Ok(()));
        let r = try_for_each(
            &items[..2],
            2,
            |_| -> Result<(), &str> { panic!("boom") },
            || "panicked",
        );
        assert_eq!(r, Err("panicked"));
    }
}
