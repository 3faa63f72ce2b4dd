//! Oblivious HTTP's replay window (RFC 9458 §6.5): the inner request's `Date` must fall
//! within `replay_window_s` of the gateway's clock, and its `enc` must not have been
//! seen. An entry lives twice the window: a request dated at the window's far edge stays
//! refusable until its `Date` leaves the window. Without a `Date` (RFC 9458 makes it a
//! SHOULD), a request is accepted and remembered for the same time unless
//! `require_date` is set; a replay after that is not caught, which `require_date = true`
//! closes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Method;

use super::{Store, Verdict};

/// The scope Oblivious HTTP's entries are kept under.
pub const SCOPE: &str = "ohttp";

/// The window, and the store its `enc`s go to.
#[derive(Debug, Clone)]
pub struct Replay {
    window: Duration,
    require_date: bool,
    store: Arc<Store>,
}

impl Replay {
    /// A defence with `window` (each side of the gateway's clock) over `store`.
    pub fn new(window: Duration, require_date: bool, store: Arc<Store>) -> Self {
        Self {
            window,
            require_date,
            store,
        }
    }

    /// Checks an inner request's `Date` field, then its `enc`, entering it if fresh.
    pub async fn check(
        &self,
        date: Option<&[u8]>,
        enc: &[u8],
        method: &Method,
        now: SystemTime,
    ) -> Verdict {
        if !self.date_within(date, now) {
            return Verdict::DateOutside;
        }
        self.store.enter(SCOPE, enc, self.window * 2, method).await
    }

    fn date_within(&self, date: Option<&[u8]>, now: SystemTime) -> bool {
        let Some(value) = date else {
            return !self.require_date;
        };
        let Some(date) = std::str::from_utf8(value)
            .ok()
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
        else {
            return false;
        };
        let skew = match date.duration_since(now) {
            Ok(ahead) => ahead,
            Err(behind) => behind.duration(),
        };
        skew <= self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dates_outside_the_window_unparseable_or_missing_when_required_are_refused() {
        let now = SystemTime::now();
        let store = Arc::new(Store::memory());
        let replay = Replay::new(Duration::from_secs(30), false, store.clone());
        let date = |t: SystemTime| httpdate::fmt_http_date(t).into_bytes();
        let post = &Method::POST;
        assert_eq!(
            replay.check(Some(&date(now)), b"a", post, now).await,
            Verdict::Fresh
        );
        assert_eq!(
            replay.check(Some(&date(now)), b"a", post, now).await,
            Verdict::Replayed
        );
        let late = now - Duration::from_secs(31);
        let early = now + Duration::from_secs(31);
        for bad in [date(late), date(early), b"yesterday".to_vec()] {
            assert_eq!(
                replay.check(Some(&bad), b"b", post, now).await,
                Verdict::DateOutside
            );
        }
        assert_eq!(replay.check(None, b"e", post, now).await, Verdict::Fresh);
        let strict = Replay::new(Duration::from_secs(30), true, store);
        assert_eq!(
            strict.check(None, b"f", post, now).await,
            Verdict::DateOutside
        );
        // A refused date does not enter its enc: the same enc with a good date is fresh.
        assert_eq!(
            replay.check(Some(&date(now)), b"b", post, now).await,
            Verdict::Fresh
        );
    }
}
