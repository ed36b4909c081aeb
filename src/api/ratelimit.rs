//! Rate limits per caller (token, else client address) and route class, with GCRA buckets
//! (governor). Limits come from the live config; a reload that changes them starts fresh
//! buckets.

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter, state::keyed::DefaultKeyedStateStore};

use crate::config::RateLimitConfig;

/// Which bucket a route draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Not limited (health probes).
    None,
    Read,
    Write,
    Upload,
    Exec,
}

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

struct Buckets {
    cfg: RateLimitConfig,
    read: Limiter,
    write: Limiter,
    upload: Limiter,
    exec: Limiter,
    failed_auth: Limiter,
}

/// The outcome of a check: allowed with what is left, or refused until `retry_after`.
#[derive(Debug, Clone, Copy)]
pub enum Decision {
    Unlimited,
    Allowed { limit: u32, remaining: u32 },
    Limited { limit: u32, retry_after: Duration },
}

pub struct RateLimits {
    buckets: RwLock<Arc<Buckets>>,
}

fn nz(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
}

fn limiter(q: Quota) -> Limiter {
    RateLimiter::keyed(q).with_middleware::<StateInformationMiddleware>()
}

impl Buckets {
    fn new(cfg: &RateLimitConfig) -> Buckets {
        let per_sec = |rate, burst| limiter(Quota::per_second(nz(rate)).allow_burst(nz(burst)));
        Buckets {
            cfg: cfg.clone(),
            read: per_sec(cfg.read_per_second, cfg.read_burst),
            write: per_sec(cfg.write_per_second, cfg.write_burst),
            upload: per_sec(cfg.upload_per_second, cfg.upload_burst),
            exec: per_sec(cfg.exec_per_second, cfg.exec_burst),
            failed_auth: limiter(
                Quota::per_minute(nz(cfg.failed_auth_per_minute))
                    .allow_burst(nz(cfg.failed_auth_burst)),
            ),
        }
    }
}

fn decide(l: &Limiter, key: &str, limit: u32) -> Decision {
    match l.check_key(&key.to_owned()) {
        Ok(snapshot) => Decision::Allowed {
            limit,
            remaining: snapshot.remaining_burst_capacity(),
        },
        Err(not_until) => Decision::Limited {
            limit,
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        },
    }
}

impl RateLimits {
    pub fn new(cfg: &RateLimitConfig) -> RateLimits {
        RateLimits {
            buckets: RwLock::new(Arc::new(Buckets::new(cfg))),
        }
    }

    fn current(&self, cfg: &RateLimitConfig) -> Arc<Buckets> {
        let b = match self.buckets.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if b.cfg == *cfg {
            return b;
        }
        let fresh = Arc::new(Buckets::new(cfg));
        match self.buckets.write() {
            Ok(mut g) => *g = fresh.clone(),
            Err(p) => *p.into_inner() = fresh.clone(),
        }
        fresh
    }

    /// Takes one request from `key`'s bucket for `class`.
    pub fn check(&self, cfg: &RateLimitConfig, class: Class, key: &str) -> Decision {
        if !cfg.enabled || class == Class::None {
            return Decision::Unlimited;
        }
        let b = self.current(cfg);
        match class {
            Class::None => Decision::Unlimited,
            Class::Read => decide(&b.read, key, cfg.read_burst),
            Class::Write => decide(&b.write, key, cfg.write_burst),
            Class::Upload => decide(&b.upload, key, cfg.upload_burst),
            Class::Exec => decide(&b.exec, key, cfg.exec_burst),
        }
    }

    /// Counts one failed authentication from `client`; `Limited` once they come too fast.
    pub fn failed_auth(&self, cfg: &RateLimitConfig, client: &str) -> Decision {
        if !cfg.enabled {
            return Decision::Unlimited;
        }
        decide(
            &self.current(cfg).failed_auth,
            client,
            cfg.failed_auth_burst,
        )
    }

    /// Forgets buckets that are full again, so memory does not grow with every address seen.
    pub fn housekeep(&self) {
        let b = match self.buckets.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for l in [&b.read, &b.write, &b.upload, &b.exec, &b.failed_auth] {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_then_refills_and_keys_are_separate() {
        let cfg = RateLimitConfig {
            read_per_second: 20,
            read_burst: 3,
            ..RateLimitConfig::default()
        };
        let rl = RateLimits::new(&cfg);
        for _ in 0..3 {
            assert!(matches!(
                rl.check(&cfg, Class::Read, "a"),
                Decision::Allowed { .. }
            ));
        }
        let Decision::Limited { retry_after, .. } = rl.check(&cfg, Class::Read, "a") else {
            panic!("fourth request within the burst was allowed");
        };
        assert!(retry_after <= Duration::from_millis(50));
        assert!(
            matches!(rl.check(&cfg, Class::Read, "b"), Decision::Allowed { .. }),
            "keys share a bucket"
        );
        assert!(
            matches!(rl.check(&cfg, Class::Write, "a"), Decision::Allowed { .. }),
            "classes share a bucket"
        );
        std::thread::sleep(Duration::from_millis(120));
        assert!(
            matches!(rl.check(&cfg, Class::Read, "a"), Decision::Allowed { .. }),
            "no recovery"
        );
        let off = RateLimitConfig {
            enabled: false,
            ..cfg
        };
        assert!(matches!(
            rl.check(&off, Class::Read, "a"),
            Decision::Unlimited
        ));
    }
}
