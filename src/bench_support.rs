//! Each wrapper calls the gateway's own hot-path code (the memory store,
//! the cookie filter, the identity cache, the response rewrite, assertion
//! signing, PAT minting) with the inputs a request would bring, so that a
//! benchmark measures that code and never a copy of it.

use std::future::Future;

use futures_util::FutureExt;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::assertion::{self, CachedAssertion, Claims, Signer};
use crate::embed::{cookies, rewrite, Local};
use crate::session::{self, Attributes, MemoryStore, PatRecord, SessionRecord, Store};
use crate::token::{self, TokenHash};

/// The app every fixture's sessions and PATs are for.
const APP_ID: &str = "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc";
/// The default `[session] cookie_name`.
const COOKIE_NAME: &str = "embedgate_session";
/// `server.public_url`: the assertion's issuer and the rewrite's origin.
const PUBLIC_URL: &str = "https://gw.example.com";
/// Distinct users the fixtures spread their records over.
const USERS: usize = 1_000;

/// A fixture that could not be set up.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Runs a memory-store operation, which never waits: it holds no lock
/// across an await and does no I/O.
fn ready<T>(operation: impl Future<Output = T>) -> T {
    match operation.now_or_never() {
        Some(output) => output,
        None => unreachable!("the memory store never waits"),
    }
}

fn user(i: usize) -> String {
    format!("user{}@example.com", i % USERS)
}

fn pat_record(email: String, now_ms: u64) -> PatRecord {
    PatRecord {
        email,
        groups: vec!["sales".into(), "emea".into()],
        attributes: Attributes::new(),
        app_id: APP_ID.into(),
        session_idle_ms: 3_600_000,
        expires_ms: now_ms + 3_600_000,
    }
}

/// A memory store holding live sessions, started the way an exchange
/// starts them (PAT minted, taken, session started).
pub struct Sessions {
    store: MemoryStore,
    tokens: Vec<String>,
}

impl Sessions {
    /// A store with `count` live sessions of one app, spread over
    /// 1 000 users.
    pub fn filled(count: usize) -> Result<Sessions, Error> {
        let store = MemoryStore::new();
        let now = session::now_ms();
        let mut tokens = Vec::with_capacity(count);
        for i in 0..count {
            let pat = token::hash(&format!("pat-{i}"));
            ready(store.insert_pat(pat, pat_record(user(i), now), now))?;
            let record = ready(store.take_pat(&pat, APP_ID, true, now))?.map_err(|r| format!("{r:?}"))?;
            let started = SessionRecord::start(
                &record,
                record.groups.clone(),
                std::time::Duration::from_secs(86_400),
                now,
            );
            let token = token::new_session_token()?;
            if !ready(store.start_session(token::hash(&token), started, &pat, true))? {
                return Err("a session did not start".into());
            }
            tokens.push(token);
        }
        Ok(Sessions { store, tokens })
    }

    /// The `i`-th session's cookie value (wrapping).
    pub fn token(&self, i: usize) -> &str {
        &self.tokens[i % self.tokens.len()]
    }

    /// What the session check does with one cookie value: hash it and use
    /// the session (a hit slides its expiry and clones its record).
    /// Whether a live session of the app was found.
    pub fn lookup(&self, cookie_value: &str) -> bool {
        let hash = token::hash(cookie_value);
        ready(self.store.use_session(&hash, APP_ID, session::now_ms())).is_ok_and(|found| found.is_some())
    }
}

/// Takes the session cookie out of a request's `Cookie` fields as the
/// session check does (the default cookie name, each value handed on
/// uncopied); returns how many values there were.
pub fn take_session_cookie(headers: &mut HeaderMap) -> usize {
    cookies::take_each(headers, COOKIE_NAME, |value| {
        std::hint::black_box(value);
    })
}

/// A signer, and a session whose identity headers this process serves.
pub struct IdentityFixture {
    local: Local,
    signer: Signer,
    hash: TokenHash,
    record: SessionRecord,
}

impl IdentityFixture {
    /// A session of a user in two groups, without attributes, whose
    /// identity was already built once (as for every request but a
    /// session's first).
    pub fn warm() -> Result<IdentityFixture, Error> {
        let now = session::now_ms();
        let pat = pat_record(user(0), now);
        let record = SessionRecord::start(&pat, pat.groups.clone(), std::time::Duration::from_secs(86_400), now);
        let identity = IdentityFixture {
            local: Local::default(),
            signer: Signer::generate()?,
            hash: token::hash("a session token"),
            record,
        };
        identity.headers()?;
        Ok(identity)
    }

    /// `X-Embed-User`, `-Groups`, `-App` and `-Assertion` for the session,
    /// as the embed route's identity phase builds them.
    pub fn headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
        Ok(self.local.identity_headers(
            &self.hash,
            &self.record,
            &[],
            &self.signer,
            PUBLIC_URL,
            crate::session::now_ms() / 1000,
        )?)
    }
}

/// An app under `/embed-apps/<appId>` with an upstream on
/// `127.0.0.1:3000` and one portal allowed to frame it.
pub struct Rewrite {
    prefix: String,
    frame_ancestors: HeaderValue,
}

impl Default for Rewrite {
    fn default() -> Self {
        Rewrite {
            prefix: format!("/embed-apps/{APP_ID}"),
            frame_ancestors: crate::config::frame_ancestors_directive(&["https://portal.example.com".into()]),
        }
    }
}

impl Rewrite {
    fn mount(&self) -> rewrite::Mount<'_> {
        rewrite::Mount {
            prefix: Some(&self.prefix),
            public_url: PUBLIC_URL,
            upstream_authority: "127.0.0.1:3000",
            upstream_base: "",
            frame_ancestors: &self.frame_ancestors,
            cookie_name: COOKIE_NAME,
        }
    }

    /// An upstream's `Location` moved under the mount (`None`: left alone).
    pub fn location(&self, location: &str) -> Option<String> {
        rewrite::rewrite_location(location, &self.prefix, &self.mount())
    }

    /// An upstream's `Set-Cookie` moved under the mount (`None`: dropped).
    pub fn set_cookie(&self, set_cookie: &str) -> Option<String> {
        rewrite::rewrite_set_cookie(set_cookie, &self.mount())
    }

    /// The app's `frame-ancestors` put into the response's CSP.
    pub fn csp(&self, headers: &mut HeaderMap) {
        rewrite::set_frame_ancestors(headers, &self.frame_ancestors);
    }

    /// The whole response filter of the embed route.
    pub fn apply(&self, headers: &mut HeaderMap) {
        rewrite::apply(headers, &self.mount());
    }
}

/// A signer and one session's assertion cache.
pub struct AssertionFixture {
    signer: Signer,
    cache: Option<CachedAssertion>,
    email: String,
    groups: Vec<String>,
}

impl AssertionFixture {
    /// An in-memory Ed25519 signer (no `[assertion]` key file) and an
    /// empty cache.
    pub fn new() -> Result<AssertionFixture, Error> {
        Ok(AssertionFixture {
            signer: Signer::generate()?,
            cache: None,
            email: user(0),
            groups: vec!["sales".into(), "emea".into()],
        })
    }

    /// The `X-Embed-Assertion` value at `now` (Unix seconds) through this
    /// session's cache: reused while it has time left, else signed and kept.
    pub fn reuse_or_sign(&mut self, now: u64) -> Result<HeaderValue, Error> {
        let claims = claims(&self.email, &self.groups, now);
        Ok(assertion::reuse_or_sign(&mut self.cache, &self.signer, &claims, now)?)
    }

    /// A fresh `X-Embed-Assertion` value at `now`, as for a session seen
    /// for the first time (an empty cache).
    pub fn sign_fresh(&self, now: u64) -> Result<HeaderValue, Error> {
        let claims = claims(&self.email, &self.groups, now);
        Ok(assertion::reuse_or_sign(&mut None, &self.signer, &claims, now)?)
    }
}

/// The claims the identity phase signs for a session at `now`.
fn claims<'a>(email: &'a str, groups: &'a [String], now: u64) -> Claims<'a> {
    Claims {
        iss: PUBLIC_URL,
        aud: APP_ID,
        sub: email,
        groups,
        attrs: None,
        iat: now,
        exp: now + assertion::LIFETIME_SECONDS,
    }
}

/// A memory store that PATs are minted into.
#[derive(Default)]
pub struct Mint {
    store: MemoryStore,
}

impl Mint {
    /// What the mint endpoint does once the request is validated and
    /// admitted: a new PAT from the OS CSPRNG, and its record kept under
    /// its hash. `i` picks the user (wrapping over 1 000 users).
    pub fn mint(&self, i: usize) -> Result<String, Error> {
        let pat = token::new_pat()?;
        let now = session::now_ms();
        ready(self.store.insert_pat(token::hash(&pat), pat_record(user(i), now), now))?;
        Ok(pat)
    }
}
