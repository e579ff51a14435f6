//! What this process keeps about the sessions it serves, beside the store:
//! the identity headers and signed assertion it last built for each (so a
//! busy session costs no signature per request), and a revocation signal
//! per session with open tunnels. Keyed by the session's hash; never
//! stored, never shared — another replica builds its own.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use http::header::{HeaderName, HeaderValue};
use tokio::sync::{broadcast, watch};
use tracing::{debug, warn};

use crate::assertion::{self, CachedAssertion, Claims, Signer};
use crate::drain::Watch;
use crate::error::GatewayError;
use crate::proxy::{Cancel, Vouched};
use crate::session::{Ended, SessionRecord, Subject};
use crate::token::TokenHash;

static X_EMBED_USER: HeaderName = HeaderName::from_static("x-embed-user");
static X_EMBED_GROUPS: HeaderName = HeaderName::from_static("x-embed-groups");
static X_EMBED_APP: HeaderName = HeaderName::from_static("x-embed-app");
static X_EMBED_ASSERTION: HeaderName = HeaderName::from_static("x-embed-assertion");

/// The embed layer's per-process session state.
#[derive(Debug, Default)]
pub(crate) struct Local {
    identities: DashMap<TokenHash, IdentityHeaders, crate::fast_hash::FastHash>,
    /// Raised once when the session ends (revoked, or swept after it
    /// expired); its open tunnels watch it.
    tunnels: DashMap<TokenHash, watch::Sender<bool>>,
}

/// One session's identity headers, built once, and its last assertion.
#[derive(Debug)]
struct IdentityHeaders {
    /// What the headers were built from; a record or an app's
    /// `attribute_headers` that differs rebuilds.
    subject: Arc<Subject>,
    attribute_names: Vec<(String, HeaderName)>,
    user: HeaderValue,
    groups_header: HeaderValue,
    app: HeaderValue,
    /// `X-Embed-Attr-<key>` for each of the app's `attribute_headers` the
    /// session has a header-safe value for.
    attribute_headers: Vec<(HeaderName, HeaderValue)>,
    assertion: Option<CachedAssertion>,
}

impl IdentityHeaders {
    fn new(session: &SessionRecord, attribute_names: &[(String, HeaderName)]) -> Result<Self, GatewayError> {
        let value = |s: &str| HeaderValue::from_str(s).map_err(|e| GatewayError::Internal(Box::new(e)));
        let attribute_headers = attribute_names
            .iter()
            .filter_map(|(key, name)| {
                let text = header_text(session.subject.attributes.get(key)?)?;
                Some((name.clone(), HeaderValue::from_str(&text).ok()?))
            })
            .collect();
        Ok(IdentityHeaders {
            subject: session.subject.clone(),
            attribute_names: attribute_names.to_vec(),
            user: value(&session.subject.email)?,
            groups_header: value(&session.subject.groups.join(","))?,
            app: value(&session.subject.app_id)?,
            attribute_headers,
            assertion: None,
        })
    }

    fn is_for(&self, session: &SessionRecord, attribute_names: &[(String, HeaderName)]) -> bool {
        // The memory store hands every request of a session the same
        // subject, and `Arc`'s `==` compares pointers first (`Subject` is
        // `Eq`): no string is read.
        self.subject == session.subject && self.attribute_names == attribute_names
    }
}

/// An attribute's value as a header value: strings of visible ASCII and
/// inner spaces, numbers and booleans as their JSON text; anything else
/// (`Zürich`, a line break) is left out of headers and stays in the
/// assertion, where JSON carries it intact.
fn header_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => {
            let safe = s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') && s.trim() == s;
            safe.then(|| s.clone())
        }
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Local {
    /// `X-Embed-User`, `-Groups`, `-App`, `-Assertion` (SPEC §5) and the
    /// `X-Embed-Attr-*` named by `attribute_names` (the app's
    /// `attribute_headers`) for the session with this hash. The assertion
    /// is reused while it has time left at `now` (Unix seconds) and was
    /// signed by `signer` for this identity and `issuer`.
    pub(crate) fn identity_headers(
        &self,
        hash: &TokenHash,
        session: &SessionRecord,
        attribute_names: &[(String, HeaderName)],
        signer: &Signer,
        issuer: &str,
        now: u64,
    ) -> Result<Vouched, GatewayError> {
        let mut entry = self
            .identities
            .entry(*hash)
            .or_try_insert_with(|| IdentityHeaders::new(session, attribute_names))?;
        if !entry.is_for(session, attribute_names) {
            *entry = IdentityHeaders::new(session, attribute_names)?;
        }
        let claims = Claims {
            iss: issuer,
            aud: &session.subject.app_id,
            sub: &session.subject.email,
            groups: &session.subject.groups,
            attrs: (!session.subject.attributes.is_empty()).then_some(&session.subject.attributes),
            iat: now,
            exp: now + assertion::LIFETIME_SECONDS,
        };
        let jwt = assertion::reuse_or_sign(&mut entry.assertion, signer, &claims, now)
            .map_err(|e| GatewayError::Internal(Box::new(e)))?;
        // One more slot for the mount prefix the caller may add.
        let mut headers = Vouched::with_capacity(5 + entry.attribute_headers.len());
        headers.push((X_EMBED_USER.clone(), entry.user.clone()));
        headers.push((X_EMBED_GROUPS.clone(), entry.groups_header.clone()));
        headers.push((X_EMBED_APP.clone(), entry.app.clone()));
        headers.push((X_EMBED_ASSERTION.clone(), jwt));
        headers.extend(entry.attribute_headers.iter().cloned());
        Ok(headers)
    }

    /// Forgets the identities whose assertion has expired: sessions not
    /// used for a minute are rebuilt on their next request.
    pub(crate) fn sweep(&self) {
        let now = unix_seconds();
        self.identities
            .retain(|_, identity| identity.assertion.as_ref().is_some_and(|a| a.expires_after(now)));
    }

    /// A future that resolves when the session with this hash ends, for a
    /// tunnel to select on. The signal is dropped with the last
    /// tunnel that watches it.
    pub(crate) fn watch_tunnel(self: &Arc<Self>, hash: TokenHash) -> Cancel {
        let receiver = self
            .tunnels
            .entry(hash)
            .or_insert_with(|| watch::channel(false).0)
            .subscribe();
        let mut watching = TunnelWatch {
            local: self.clone(),
            hash,
            receiver: Some(receiver),
        };
        Box::pin(async move {
            if let Some(receiver) = watching.receiver.as_mut() {
                // An error means the signal was dropped: revoked, too.
                let _ = receiver.wait_for(|revoked| *revoked).await;
            }
        })
    }

    /// Ends the tunnels of these sessions and forgets their identities.
    fn ended(&self, hashes: &[TokenHash]) {
        for hash in hashes {
            self.identities.remove(hash);
            if let Some((_, signal)) = self.tunnels.remove(hash) {
                signal.send_replace(true);
            }
        }
    }

    /// Ends every open tunnel and forgets every identity: what to do when
    /// it cannot be known which sessions ended.
    fn end_all(&self) {
        self.identities.clear();
        self.tunnels.retain(|_, signal| {
            signal.send_replace(true);
            false
        });
    }

    /// Follows the sessions the store ends until draining begins, ending
    /// their tunnels at once (a revoked session's, SPEC §6; an expired one's
    /// when the store sweeps it). Should it fall behind the feed, it cannot
    /// know which sessions it missed, so it ends every open tunnel: clients
    /// reconnect, and one whose session ended cannot.
    pub(crate) async fn follow_ended_sessions(self: Arc<Self>, mut feed: broadcast::Receiver<Ended>, mut drain: Watch) {
        loop {
            let heard = tokio::select! {
                heard = feed.recv() => heard,
                () = drain.signaled() => return,
            };
            match heard {
                Ok(Ended::Sessions(hashes)) => self.ended(&hashes),
                Ok(Ended::Unknown) => {
                    warn!("the store may have ended sessions unheard; closing every open tunnel");
                    self.end_all();
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(
                        missed,
                        "fell behind the feed of ended sessions; closing every open tunnel"
                    );
                    self.end_all();
                }
                Err(broadcast::error::RecvError::Closed) => {
                    debug!("the feed of ended sessions closed");
                    return;
                }
            }
        }
    }
}

/// One tunnel's hold on its session's revocation signal.
struct TunnelWatch {
    local: Arc<Local>,
    hash: TokenHash,
    receiver: Option<watch::Receiver<bool>>,
}

impl Drop for TunnelWatch {
    fn drop(&mut self) {
        drop(self.receiver.take());
        self.local
            .tunnels
            .remove_if(&self.hash, |_, signal| signal.receiver_count() == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(email: &str, groups: &[&str]) -> SessionRecord {
        SessionRecord::unending(Subject {
            attributes: Default::default(),
            email: email.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            app_id: "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc".into(),
        })
    }

    #[test]
    fn identity_headers_are_built_once_and_the_assertion_reused() {
        let local = Local::default();
        let signer = Signer::generate().expect("a key");
        let session = record("ann@example.com", &["sales", "ops"]);
        let first = local
            .identity_headers(&[1; 32], &session, &[], &signer, "https://gw", unix_seconds())
            .map(|vouched| vouched.into_iter().collect::<http::HeaderMap>())
            .expect("headers");
        assert_eq!(first[&X_EMBED_USER], "ann@example.com");
        assert_eq!(first[&X_EMBED_GROUPS], "sales,ops");
        assert_eq!(first[&X_EMBED_APP], "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc");
        let second = local
            .identity_headers(&[1; 32], &session, &[], &signer, "https://gw", unix_seconds())
            .map(|vouched| vouched.into_iter().collect::<http::HeaderMap>())
            .expect("headers");
        assert_eq!(first[&X_EMBED_ASSERTION], second[&X_EMBED_ASSERTION], "reused");

        // Another issuer (a reload changed public_url) re-signs.
        let other = local
            .identity_headers(&[1; 32], &session, &[], &signer, "https://gw2", unix_seconds())
            .map(|vouched| vouched.into_iter().collect::<http::HeaderMap>())
            .expect("headers");
        assert_ne!(first[&X_EMBED_ASSERTION], other[&X_EMBED_ASSERTION]);
        // A record with other groups under the same hash is rebuilt.
        let regrouped = record("ann@example.com", &["ops"]);
        let rebuilt = local
            .identity_headers(&[1; 32], &regrouped, &[], &signer, "https://gw2", unix_seconds())
            .map(|vouched| vouched.into_iter().collect::<http::HeaderMap>())
            .expect("headers");
        assert_eq!(rebuilt[&X_EMBED_GROUPS], "ops");
        assert_ne!(rebuilt[&X_EMBED_ASSERTION], other[&X_EMBED_ASSERTION]);
    }

    #[test]
    fn attribute_headers_carry_header_safe_values_and_the_assertion_all() {
        let local = Local::default();
        let signer = Signer::generate().expect("a key");
        let mut session = record("ann@example.com", &["sales"]);
        Arc::make_mut(&mut session.subject).attributes =
            serde_json::json!({"department": "Sales EMEA", "level": 3, "city": "Zürich", "other": "x"})
                .as_object()
                .cloned()
                .unwrap_or_default();
        let name = |s: &str| HeaderName::from_bytes(format!("x-embed-attr-{s}").as_bytes()).expect("a name");
        let names: Vec<(String, HeaderName)> = ["department", "level", "city", "absent"]
            .iter()
            .map(|k| (k.to_string(), name(k)))
            .collect();
        let headers = local
            .identity_headers(&[1; 32], &session, &names, &signer, "https://gw", unix_seconds())
            .map(|vouched| vouched.into_iter().collect::<http::HeaderMap>())
            .expect("headers");
        assert_eq!(headers[&name("department")], "Sales EMEA");
        assert_eq!(headers[&name("level")], "3");
        assert!(
            !headers.contains_key(name("city")),
            "not header-safe: only in the assertion"
        );
        assert!(!headers.contains_key(name("other")), "not listed by the app");
        assert!(!headers.contains_key(name("absent")));
        let jwt = headers[&X_EMBED_ASSERTION].to_str().expect("ascii");
        let payload = jwt.split('.').nth(1).expect("a payload");
        use base64::Engine;
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .expect("base64url"),
        )
        .expect("JSON");
        assert_eq!(claims["attrs"]["city"], "Zürich");
        assert_eq!(claims["attrs"]["level"], 3);
        assert_eq!(claims["groups"], serde_json::json!(["sales"]));

        // The app's list changed (a reload): rebuilt without the header.
        let fewer = &names[1..];
        let headers = local
            .identity_headers(&[1; 32], &session, fewer, &signer, "https://gw", unix_seconds())
            .map(|vouched| vouched.into_iter().collect::<http::HeaderMap>())
            .expect("headers");
        assert!(!headers.contains_key(name("department")));
        assert_eq!(headers[&name("level")], "3");
    }

    #[test]
    fn only_header_safe_values_become_header_text() {
        use serde_json::json;
        assert_eq!(header_text(&json!("Sales EMEA")).as_deref(), Some("Sales EMEA"));
        assert_eq!(header_text(&json!(42)).as_deref(), Some("42"));
        assert_eq!(header_text(&json!(-1.5)).as_deref(), Some("-1.5"));
        assert_eq!(header_text(&json!(false)).as_deref(), Some("false"));
        for unsafe_text in ["Zürich", "a\nb", "a\rb", "tab\there", " padded", "x\u{7f}"] {
            assert_eq!(header_text(&json!(unsafe_text)), None, "{unsafe_text:?}");
        }
    }

    #[test]
    fn sweep_forgets_only_identities_without_a_live_assertion() {
        let local = Local::default();
        let signer = Signer::generate().expect("a key");
        local
            .identity_headers(
                &[1; 32],
                &record("a@example.com", &[]),
                &[],
                &signer,
                "https://gw",
                unix_seconds(),
            )
            .map(|vouched| vouched.into_iter().collect::<http::HeaderMap>())
            .expect("headers");
        local.identities.insert(
            [2; 32],
            IdentityHeaders::new(&record("b@example.com", &[]), &[]).expect("identity"),
        );
        local.sweep();
        assert!(local.identities.contains_key(&[1; 32]));
        assert!(!local.identities.contains_key(&[2; 32]));
    }

    #[tokio::test]
    async fn a_revocation_ends_that_sessions_tunnels_only() {
        let local = Arc::new(Local::default());
        let (feed, heard) = broadcast::channel(4);
        let (drain, watch) = crate::drain::Drain::new();
        let follower = tokio::spawn(local.clone().follow_ended_sessions(heard, watch));
        let first = local.watch_tunnel([1; 32]);
        let second = local.watch_tunnel([1; 32]);
        let other = local.watch_tunnel([2; 32]);
        feed.send(Ended::Sessions(Arc::from([[1u8; 32]].as_slice())))
            .expect("a listener");
        for tunnel in [first, second] {
            tokio::time::timeout(Duration::from_secs(5), tunnel)
                .await
                .expect("the revoked session's tunnels end");
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(100), other).await.is_err(),
            "another session's tunnel stays open"
        );
        // The dropped watch took its signal with it.
        assert!(local.tunnels.is_empty(), "{:?}", local.tunnels);
        drain.drain().await;
        follower.await.expect("the follower stops on drain");
    }

    #[tokio::test]
    async fn falling_behind_the_feed_ends_every_tunnel() {
        let local = Arc::new(Local::default());
        let (feed, heard) = broadcast::channel(1);
        let tunnel = local.watch_tunnel([3; 32]);
        // Two sends into a backlog of one: the follower has lagged.
        feed.send(Ended::Sessions(Arc::from([[8u8; 32]].as_slice())))
            .expect("a listener");
        feed.send(Ended::Sessions(Arc::from([[9u8; 32]].as_slice())))
            .expect("a listener");
        let (_drain, watch) = crate::drain::Drain::new();
        tokio::spawn(local.clone().follow_ended_sessions(heard, watch));
        tokio::time::timeout(Duration::from_secs(5), tunnel)
            .await
            .expect("every tunnel ends after a lag");
    }

    #[tokio::test]
    async fn an_unknown_ending_ends_every_tunnel() {
        let local = Arc::new(Local::default());
        let (feed, heard) = broadcast::channel(4);
        let (_drain, watch) = crate::drain::Drain::new();
        tokio::spawn(local.clone().follow_ended_sessions(heard, watch));
        let first = local.watch_tunnel([4; 32]);
        let second = local.watch_tunnel([5; 32]);
        feed.send(Ended::Unknown).expect("a listener");
        for tunnel in [first, second] {
            tokio::time::timeout(Duration::from_secs(5), tunnel)
                .await
                .expect("every tunnel ends when endings went unheard");
        }
    }
}
