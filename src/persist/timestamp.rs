//! The creation time written into snapshot files, checkpoints and snapshot listings.

/// The current UTC time as RFC 3339 text with whole seconds (`2026-12-01T16:42:45Z`).
pub(crate) fn now_iso8601() -> String {
    now_iso8601_shared().to_string()
}

/// [`now_iso8601`] as text shared by every call within the same second.
pub(crate) fn now_iso8601_shared() -> std::sync::Arc<str> {
    use std::time::{SystemTime, UNIX_EPOCH};
    // The text only changes once a second: snapshots taken in a burst share it instead of
    // formatting a date each (a third of a small snapshot's cost) or copying it.
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u64, std::sync::Arc<str>)>> =
            const { std::cell::RefCell::new(None) };
    }
    let now = SystemTime::now();
    let format = || std::sync::Arc::from(humantime::format_rfc3339_seconds(now).to_string());
    let Ok(secs) = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()) else {
        return format();
    };
    LAST.with_borrow_mut(|last| match last {
        Some((s, text)) if *s == secs => text.clone(),
        _ => last.insert((secs, format())).1.clone(),
    })
}
