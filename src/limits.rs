//! Rate limits (SPEC §3, §4), one `governor` keyed limiter per rule. They
//! are per replica. Keys that went quiet are forgotten periodically
//! ([`Limits::retain_recent`]) so memory stays bounded under key churn.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimit;
use crate::error::RetryAfter;
use crate::metrics::{self, Limiter};

/// `Retry-After` for a wait: whole seconds rounded up (a client that waits
/// the rounded-down time would be refused again), at least 1.
fn retry_after(wait: Duration) -> RetryAfter {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    RetryAfter(secs.max(1))
}

/// The key a client address is counted under: an IPv4 address alone, an
/// IPv6 one by its /64. One subscriber, host or LAN is handed a whole /64
/// (RFC 6177, and SLAAC's privacy addresses are drawn from it), so counting
/// IPv6 addresses one by one would give one client 2^64 budgets.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
        v4 => v4,
    }
}

/// The gateway's limiters.
pub(crate) struct Limits {
    /// Keyed by the token's name (`[[api.tokens]] name`, or
    /// `token_sha256[i]`), never the token.
    per_api_token: DefaultKeyedRateLimiter<String>,
    per_user: DefaultKeyedRateLimiter<String>,
    bad_pat_per_ip: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl Limits {
    /// Limiters with the quotas of `[rate_limit]` (each at least 1/minute).
    pub(crate) fn new(config: &RateLimit) -> Self {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Limits {
            per_api_token: RateLimiter::keyed(quota(config.pat_create_per_minute)),
            per_user: RateLimiter::keyed(quota(config.pat_create_per_user_per_minute)),
            bad_pat_per_ip: RateLimiter::keyed(quota(config.bad_pat_per_minute)),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one PAT mint by the API token with this name.
    pub(crate) fn mint_by_token(&self, name: &str) -> Result<(), RetryAfter> {
        self.check(&self.per_api_token, &name.to_owned(), Limiter::PatCreate)
    }

    /// Counts one PAT mint for this (lowercased) email.
    pub(crate) fn mint_for_user(&self, email: &str) -> Result<(), RetryAfter> {
        self.check(&self.per_user, &email.to_owned(), Limiter::PatCreatePerUser)
    }

    /// Counts one failed try of a token from this client address: a PAT
    /// exchange refused, or a request whose session cookies name no live
    /// session of its app (`rate_limit.bad_pat_per_minute` bounds both).
    /// IPv6 clients are counted by their /64 ([`client_key`]).
    pub(crate) fn failed_token(&self, client: IpAddr) -> Result<(), RetryAfter> {
        self.check(&self.bad_pat_per_ip, &client_key(client), Limiter::BadPat)
    }

    /// Forgets keys whose limits have fully replenished.
    pub(crate) fn retain_recent(&self) {
        self.per_api_token.retain_recent();
        self.per_user.retain_recent();
        self.bad_pat_per_ip.retain_recent();
    }

    /// Number of keys currently tracked (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn tracked_keys(&self) -> usize {
        self.per_api_token.len() + self.per_user.len() + self.bad_pat_per_ip.len()
    }

    fn check<K: Hash + Eq + Clone>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
        which: Limiter,
    ) -> Result<(), RetryAfter> {
        limiter.check_key(key).map_err(|not_until| {
            metrics::global().rate_limited(which);
            retry_after(not_until.wait_time_from(self.clock.now()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(n: u32) -> Limits {
        Limits::new(&RateLimit {
            pat_create_per_minute: n,
            pat_create_per_user_per_minute: n,
            bad_pat_per_minute: n,
        })
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after(Duration::from_millis(1)), RetryAfter(1));
        assert_eq!(retry_after(Duration::from_millis(2001)), RetryAfter(3));
        assert_eq!(retry_after(Duration::from_secs(2)), RetryAfter(2));
        assert_eq!(retry_after(Duration::ZERO), RetryAfter(1));
    }

    #[test]
    fn each_key_gets_its_own_quota() {
        let l = limits(3);
        for _ in 0..3 {
            assert!(l.mint_for_user("a@example.com").is_ok());
        }
        let retry = l.mint_for_user("a@example.com");
        // 3 per minute: one cell every 20 s.
        assert!(
            matches!(retry, Err(RetryAfter(s)) if (1..=20).contains(&s)),
            "{retry:?}"
        );
        assert!(l.mint_for_user("b@example.com").is_ok());
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..3 {
            assert!(l.failed_token(ip).is_ok());
        }
        assert!(l.failed_token(ip).is_err());
    }

    #[test]
    fn ipv6_clients_share_one_budget_per_64() {
        let l = limits(2);
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        assert!(l.failed_token(ip("2001:db8:1:2::1")).is_ok());
        assert!(l.failed_token(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).is_ok());
        assert!(l.failed_token(ip("2001:db8:1:2::99")).is_err(), "the same /64");
        assert!(l.failed_token(ip("2001:db8:1:3::1")).is_ok(), "another /64");
        // IPv4, also when a dual-stack socket reports it mapped.
        assert!(l.failed_token(ip("192.0.2.1")).is_ok());
        assert!(l.failed_token(ip("::ffff:192.0.2.1")).is_ok());
        assert!(l.failed_token(ip("192.0.2.1")).is_err());
        assert!(l.failed_token(ip("192.0.2.2")).is_ok(), "IPv4 addresses count alone");
    }

    #[test]
    fn retain_recent_keeps_keys_still_limited() {
        let l = limits(1);
        for i in 0..50u8 {
            let _ = l.failed_token([10, 0, 0, i].into());
        }
        l.retain_recent();
        // All 50 just used their only cell: none has replenished yet.
        assert_eq!(l.tracked_keys(), 50);
    }
}
