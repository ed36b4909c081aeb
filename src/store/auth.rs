//! Who may do what: API tokens (stored only as SHA-256 hashes, compared in constant time),
//! scopes, and server-side browser sessions with their CSRF tokens. No HTTP here.
//!
//! A token reads `lhd_<id>_<secret>`: the id finds the row, the 256-bit secret proves
//! possession. Tokens can expire and be revoked; revoking a token ends its sessions.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rusqlite::OptionalExtension;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::db::Db;
use crate::util::time::{now_unix, rfc3339};

/// What a credential allows. `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Exec,
    Admin,
    Metrics,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Write,
        Scope::Exec,
        Scope::Admin,
        Scope::Metrics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Exec => "exec",
            Scope::Admin => "admin",
            Scope::Metrics => "metrics",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = Error;
    fn from_str(s: &str) -> Result<Scope> {
        Scope::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s.trim())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown scope {s:?}; scopes are read, write, exec, admin, metrics"
                ))
            })
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub fn of(list: &[Scope]) -> Scopes {
        Scopes(list.iter().fold(0, |acc, s| acc | s.bit()))
    }

    /// Whether these scopes allow `needed` (admin allows everything).
    pub fn allows(self, needed: Scope) -> bool {
        self.0 & (needed.bit() | Scope::Admin.bit()) != 0
    }

    pub fn list(self) -> Vec<Scope> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.0 & s.bit() != 0)
            .collect()
    }

    /// `read,write`-style list; refuses an empty or unknown one.
    pub fn parse_list(s: &str) -> Result<Scopes> {
        let list = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Scope::from_str)
            .collect::<Result<Vec<_>>>()?;
        if list.is_empty() {
            return Err(Error::Invalid(
                "at least one scope is needed (read, write, exec, admin, metrics)".into(),
            ));
        }
        Ok(Scopes::of(&list))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.list().into_iter().map(Scope::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.list().serialize(s)
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    #[schema(value_type = Vec<Scope>)]
    pub scopes: Scopes,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

/// A freshly made token: the only moment its secret exists outside the client.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NewToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Token,
    Session,
    /// Root or the daemon's own user on the admin socket (peer credentials).
    Local,
}

/// The authenticated caller.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Actor {
    /// The token's name, or `local:uid=N` for the admin socket.
    pub name: String,
    pub token_id: Option<String>,
    pub session_id: Option<String>,
    #[schema(value_type = Vec<Scope>)]
    pub scopes: Scopes,
    pub via: Via,
}

impl Actor {
    pub fn local(uid: u32) -> Actor {
        Actor {
            name: format!("local:uid={uid}"),
            token_id: None,
            session_id: None,
            scopes: Scopes::of(&[Scope::Admin]),
            via: Via::Local,
        }
    }
}

/// Why a credential was refused (said to the client only as "invalid or expired").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    Unknown,
    Revoked,
    Expired,
    /// A one-time login link used already.
    Used,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Unknown => "unknown",
            Refusal::Revoked => "revoked",
            Refusal::Expired => "expired",
            Refusal::Used => "used",
        }
    }
}

/// A one-time login link as made: the secret (`<id>.<secret>`, shown once; only its hash is
/// stored) and when it expires.
#[derive(Debug, Clone)]
pub struct NewLoginLink {
    pub link: String,
    pub expires_at: String,
}

/// A session as verified: the caller and the CSRF token its changes must carry.
#[derive(Debug, Clone)]
pub struct SessionAuth {
    pub actor: Actor,
    pub csrf: String,
}

/// A freshly made browser session.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The cookie value (`<id>.<secret>`); only its hash is stored.
    pub cookie: String,
    pub csrf: String,
    pub actor: Actor,
}

const TOKEN_PREFIX: &str = "lhd_";

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| Error::Internal(format!("no randomness from the kernel: {e}")))?;
    Ok(hex::encode(buf))
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two digests without an early exit, so timing says nothing about where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn valid_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid token name {name:?}: 1-64 characters of letters, digits, '-', '_', '.', '@'"
        )))
    }
}

fn token_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenInfo> {
    let scopes: String = row.get("scopes")?;
    Ok(TokenInfo {
        id: row.get("id")?,
        name: row.get("name")?,
        scopes: Scopes::parse_list(&scopes).unwrap_or_default(),
        created_at: rfc3339(row.get("created_at")?),
        expires_at: row.get::<_, Option<i64>>("expires_at")?.map(rfc3339),
        revoked_at: row.get::<_, Option<i64>>("revoked_at")?.map(rfc3339),
        last_used_at: row.get::<_, Option<i64>>("last_used_at")?.map(rfc3339),
    })
}

/// Token and session operations over the state database.
#[derive(Clone)]
pub struct Auth {
    db: Db,
    /// When each token's use was last written, so a busy token costs one write a minute.
    touched: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
    /// Tokens verified against the database, so a request costs a hash and a map lookup
    /// instead of a database read. Revocation (in this process: the API and the admin socket
    /// both end in `revoke_token`) removes the entry; an entry ends at the token's expiry.
    verified: std::sync::Arc<std::sync::Mutex<VerifiedTokens>>,
}

/// The verified-token cache and its generation (bumped by every revocation, so a verification
/// that read the database before a revocation committed cannot cache the revoked token).
#[derive(Default)]
struct VerifiedTokens {
    generation: u64,
    by_id: std::collections::HashMap<String, CachedToken>,
}

struct CachedToken {
    digest: Vec<u8>,
    expires_at: Option<i64>,
    actor: Actor,
}

/// Most tokens cached; past it the cache starts over (tokens are few in practice).
const VERIFIED_CACHE_MAX: usize = 10_000;

impl Auth {
    pub fn new(db: Db) -> Auth {
        Auth {
            db,
            touched: Default::default(),
            verified: Default::default(),
        }
    }

    fn cached(&self, id: &str, digest: &[u8]) -> Option<Actor> {
        let mut cache = self.verified.lock().ok()?;
        let hit = cache.by_id.get(id)?;
        if !constant_time_eq(&hit.digest, digest) {
            return None;
        }
        if hit.expires_at.is_some_and(|e| e <= now_unix()) {
            cache.by_id.remove(id);
            return None;
        }
        Some(hit.actor.clone())
    }

    fn forget(&self, id: &str) {
        if let Ok(mut cache) = self.verified.lock() {
            cache.generation += 1;
            cache.by_id.remove(id);
        }
    }

    /// Makes a token; its secret is returned once and stored only as a hash. Refused (507)
    /// below the free-disk floor, before anything is written.
    pub async fn create_token(
        &self,
        name: &str,
        scopes: Scopes,
        expires_in: Option<Duration>,
    ) -> Result<NewToken> {
        // Before the row: its audit row must fit too, or neither is written.
        self.db.ensure_free(0)?;
        self.make_token(name, scopes, expires_in).await
    }

    /// The first start's admin token: made whatever the free disk, since without it nobody
    /// can get in to free space (a daemon on a full disk still starts, reporting not ready).
    pub async fn create_initial_token(&self, name: &str, scopes: Scopes) -> Result<NewToken> {
        self.make_token(name, scopes, None).await
    }

    async fn make_token(
        &self,
        name: &str,
        scopes: Scopes,
        expires_in: Option<Duration>,
    ) -> Result<NewToken> {
        valid_name(name)?;
        if scopes == Scopes::default() {
            return Err(Error::Invalid("at least one scope is needed".into()));
        }
        let id = random_hex(8)?;
        let secret = random_hex(32)?;
        let token = format!("{TOKEN_PREFIX}{id}_{secret}");
        let now = now_unix();
        let expires_at =
            expires_in.map(|d| now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
        let (name, scope_text, digest, tid) = (
            name.to_owned(),
            scopes.to_string(),
            hash(&secret),
            id.clone(),
        );
        let info = self
            .db
            .write(move |c| {
                let taken: bool = c.query_row("SELECT EXISTS(SELECT 1 FROM tokens WHERE name = ?1)", [&name], |r| r.get(0))?;
                if taken {
                    return Err(Error::Conflict(format!("a token named {name:?} already exists")));
                }
                c.execute(
                    "INSERT INTO tokens(id, name, secret_hash, scopes, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    rusqlite::params![tid, name, digest.as_slice(), scope_text, now, expires_at],
                )?;
                Ok(c.query_row("SELECT * FROM tokens WHERE id = ?1", [&tid], token_info)?)
            })
            .await?;
        Ok(NewToken { token, info })
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        self.db
            .read(|c| {
                let mut st = c.prepare("SELECT * FROM tokens ORDER BY created_at, name")?;
                let rows = st
                    .query_map([], token_info)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
    }

    pub async fn token_count(&self) -> Result<i64> {
        self.db
            .read(|c| Ok(c.query_row("SELECT count(*) FROM tokens", [], |r| r.get(0))?))
            .await
    }

    /// Revokes a token (by id or name) and every session opened with it.
    pub async fn revoke_token(&self, id_or_name: &str) -> Result<TokenInfo> {
        let key = id_or_name.to_owned();
        self.db
            .write(move |c| {
                let now = now_unix();
                let id: Option<String> = c
                    .query_row(
                        "SELECT id FROM tokens WHERE id = ?1 OR name = ?1",
                        [&key],
                        |r| r.get(0),
                    )
                    .optional()?;
                let id =
                    id.ok_or_else(|| Error::NotFound(format!("no token with id or name {key:?}")))?;
                c.execute(
                    "UPDATE tokens SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
                    rusqlite::params![id, now],
                )?;
                c.execute(
                    "UPDATE sessions SET revoked_at = coalesce(revoked_at, ?2) WHERE token_id = ?1",
                    rusqlite::params![id, now],
                )?;
                Ok(c.query_row("SELECT * FROM tokens WHERE id = ?1", [&id], token_info)?)
            })
            .await
            .inspect(|info| self.forget(&info.id))
    }

    /// Checks a bearer token. `Ok(Err(refusal))` is a refused credential; `Err` a failure.
    pub async fn verify_token(&self, token: &str) -> Result<std::result::Result<Actor, Refusal>> {
        let Some((id, secret)) = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|t| t.split_once('_'))
        else {
            return Ok(Err(Refusal::Malformed));
        };
        if id.len() != 16 || secret.len() != 64 {
            return Ok(Err(Refusal::Malformed));
        }
        let (id, digest) = (id.to_owned(), hash(secret));
        if let Some(actor) = self.cached(&id, &digest) {
            return Ok(Ok(actor));
        }
        let generation = self.verified.lock().map(|c| c.generation).unwrap_or(0);
        let stored_digest = digest.to_vec();
        let verified = self
            .db
            .read(move |c| {
                let row = c
                    .query_row(
                        "SELECT name, secret_hash, scopes, expires_at, revoked_at FROM tokens WHERE id = ?1",
                        [&id],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, Vec<u8>>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, Option<i64>>(3)?,
                                r.get::<_, Option<i64>>(4)?,
                            ))
                        },
                    )
                    .optional()?;
                let Some((name, stored, scopes, expires, revoked)) = row else {
                    return Ok(Err(Refusal::Unknown));
                };
                if !constant_time_eq(&stored, &digest) {
                    return Ok(Err(Refusal::Unknown));
                }
                if revoked.is_some() {
                    return Ok(Err(Refusal::Revoked));
                }
                if expires.is_some_and(|e| e <= now_unix()) {
                    return Ok(Err(Refusal::Expired));
                }
                Ok(Ok((
                    Actor {
                        name,
                        token_id: Some(id),
                        session_id: None,
                        scopes: Scopes::parse_list(&scopes).unwrap_or_default(),
                        via: Via::Token,
                    },
                    expires,
                )))
            })
            .await?;
        Ok(verified.map(|(actor, expires_at)| {
            if let (Ok(mut cache), Some(id)) = (self.verified.lock(), actor.token_id.clone())
                && cache.generation == generation
            {
                if cache.by_id.len() >= VERIFIED_CACHE_MAX {
                    cache.by_id.clear();
                }
                cache.by_id.insert(
                    id,
                    CachedToken {
                        digest: stored_digest,
                        expires_at,
                        actor: actor.clone(),
                    },
                );
            }
            actor
        }))
    }

    /// Whether token `id`'s last use is due to be written (at most once a minute per token);
    /// marks it as written when it is. Cheap: callers ask before spawning the write.
    pub fn touch_due(&self, id: &str) -> bool {
        let now = now_unix();
        let Ok(mut touched) = self.touched.lock() else {
            return false;
        };
        if touched.get(id).is_some_and(|t| now - t < 60) {
            return false;
        }
        if touched.len() > 10_000 {
            touched.clear();
        }
        touched.insert(id.to_owned(), now);
        true
    }

    /// Records use of token `id` (callers ask `touch_due` first, so it is written at most
    /// once a minute per token and reads stay reads).
    pub async fn touch_token(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.db
            .write(move |c| {
                let now = now_unix();
                c.execute(
                    "UPDATE tokens SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2 - 60)",
                    rusqlite::params![id, now],
                )?;
                Ok(())
            })
            .await
    }

    /// Opens a browser session for a verified actor: a token's, or the local admin's (from a
    /// login link), whose session is tied to no token.
    pub async fn create_session(&self, actor: &Actor) -> Result<NewSession> {
        let (token_id, local_actor) = match (&actor.token_id, actor.via) {
            (Some(t), _) => (Some(t.clone()), None),
            (None, Via::Local) => (None, Some(actor.name.clone())),
            (None, _) => {
                return Err(Error::Invalid(
                    "a session can only be opened with an API token or a login link".into(),
                ));
            }
        };
        self.db.ensure_free(0)?;
        let id = random_hex(16)?;
        let secret = random_hex(32)?;
        let csrf = random_hex(32)?;
        let (sid, digest, c_csrf) = (id.clone(), hash(&secret), csrf.clone());
        self.db
            .write(move |c| {
                let now = now_unix();
                c.execute(
                    "INSERT INTO sessions(id, secret_hash, token_id, local_actor, csrf, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                    rusqlite::params![sid, digest.as_slice(), token_id, local_actor, c_csrf, now],
                )?;
                Ok(())
            })
            .await?;
        let mut actor = actor.clone();
        actor.session_id = Some(id.clone());
        actor.via = Via::Session;
        Ok(NewSession {
            cookie: format!("{id}.{secret}"),
            csrf,
            actor,
        })
    }

    /// Makes a one-time login link for `actor` (the local admin), valid for `ttl`.
    pub async fn create_login_link(&self, actor: &Actor, ttl: Duration) -> Result<NewLoginLink> {
        if actor.via != Via::Local {
            return Err(Error::Invalid(
                "login links are made only for the local admin (the admin socket)".into(),
            ));
        }
        self.db.ensure_free(0)?;
        let id = random_hex(16)?;
        let secret = random_hex(32)?;
        let now = now_unix();
        let expires = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let (lid, digest, name) = (id.clone(), hash(&secret), actor.name.clone());
        self.db
            .write(move |c| {
                // Used and expired links are of no use: cleared as new ones are made.
                c.execute(
                    "DELETE FROM login_links WHERE expires_at <= ?1 OR used_at IS NOT NULL",
                    [now],
                )?;
                c.execute(
                    "INSERT INTO login_links(id, secret_hash, actor, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![lid, digest.as_slice(), name, now, expires],
                )?;
                Ok(())
            })
            .await?;
        Ok(NewLoginLink {
            link: format!("{id}.{secret}"),
            expires_at: rfc3339(expires),
        })
    }

    /// Uses a login link: `Ok(Ok(actor))` (the local admin it was made for; the link is
    /// burnt in the same transaction) or why it is refused (unknown, used, expired).
    pub async fn redeem_login_link(
        &self,
        link: &str,
    ) -> Result<std::result::Result<Actor, Refusal>> {
        let Some((id, secret)) = link.split_once('.') else {
            return Ok(Err(Refusal::Malformed));
        };
        if id.len() != 32 || secret.len() != 64 {
            return Ok(Err(Refusal::Malformed));
        }
        let (id, digest) = (id.to_owned(), hash(secret));
        self.db
            .write(move |c| {
                let found = c
                    .query_row(
                        "SELECT secret_hash, actor, expires_at, used_at FROM login_links WHERE id = ?1",
                        [&id],
                        |r| {
                            Ok((
                                r.get::<_, Vec<u8>>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, i64>(2)?,
                                r.get::<_, Option<i64>>(3)?,
                            ))
                        },
                    )
                    .optional()?;
                let Some((stored, name, expires, used)) = found else {
                    return Ok(Err(Refusal::Unknown));
                };
                if !constant_time_eq(&stored, &digest) {
                    return Ok(Err(Refusal::Unknown));
                }
                if used.is_some() {
                    return Ok(Err(Refusal::Used));
                }
                let now = now_unix();
                if expires <= now {
                    return Ok(Err(Refusal::Expired));
                }
                c.execute(
                    "UPDATE login_links SET used_at = ?2 WHERE id = ?1",
                    rusqlite::params![id, now],
                )?;
                Ok(Ok(Actor {
                    name,
                    token_id: None,
                    session_id: None,
                    scopes: Scopes::of(&[Scope::Admin]),
                    via: Via::Local,
                }))
            })
            .await
    }

    /// Checks a session cookie: known, not revoked, its token still valid, not idle longer than
    /// `idle`, not older than `max_age`. Refreshes its last-seen time (at most every 30 s).
    pub async fn verify_session(
        &self,
        cookie: &str,
        idle: Duration,
        max_age: Duration,
    ) -> Result<std::result::Result<SessionAuth, Refusal>> {
        let Some((id, secret)) = cookie.split_once('.') else {
            return Ok(Err(Refusal::Malformed));
        };
        if id.len() != 32 || secret.len() != 64 {
            return Ok(Err(Refusal::Malformed));
        }
        let (id, digest) = (id.to_owned(), hash(secret));
        let sid = id.clone();
        let found = self
            .db
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT s.secret_hash, s.csrf, s.created_at, s.last_seen_at, s.revoked_at,
                            t.id, coalesce(t.name, s.local_actor), t.scopes, t.expires_at,
                            t.revoked_at
                     FROM sessions s LEFT JOIN tokens t ON t.id = s.token_id WHERE s.id = ?1",
                    [&sid],
                    |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                            r.get::<_, Option<String>>(5)?,
                            r.get::<_, Option<String>>(6)?,
                            r.get::<_, Option<String>>(7)?,
                            r.get::<_, Option<i64>>(8)?,
                            r.get::<_, Option<i64>>(9)?,
                        ))
                    },
                )
                .optional()?)
            })
            .await?;
        let Some((
            stored,
            csrf,
            created,
            last_seen,
            s_revoked,
            tid,
            name,
            scopes,
            t_expires,
            t_revoked,
        )) = found
        else {
            return Ok(Err(Refusal::Unknown));
        };
        let Some(name) = name else {
            return Ok(Err(Refusal::Unknown));
        };
        if !constant_time_eq(&stored, &digest) {
            return Ok(Err(Refusal::Unknown));
        }
        if s_revoked.is_some() || t_revoked.is_some() {
            return Ok(Err(Refusal::Revoked));
        }
        let now = now_unix();
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        if t_expires.is_some_and(|e| e <= now)
            || now.saturating_sub(last_seen) > secs(idle)
            || now.saturating_sub(created) > secs(max_age)
        {
            return Ok(Err(Refusal::Expired));
        }
        if now - last_seen >= 30 {
            let sid = id.clone();
            self.db
                .write(move |c| {
                    c.execute(
                        "UPDATE sessions SET last_seen_at = ?2 WHERE id = ?1",
                        rusqlite::params![sid, now],
                    )?;
                    Ok(())
                })
                .await?;
        }
        Ok(Ok(SessionAuth {
            actor: Actor {
                name,
                // No token: the local admin's session (a login link); admin.
                scopes: match (&tid, scopes) {
                    (Some(_), Some(list)) => Scopes::parse_list(&list).unwrap_or_default(),
                    (None, _) => Scopes::of(&[Scope::Admin]),
                    (Some(_), None) => Scopes::default(),
                },
                token_id: tid,
                session_id: Some(id),
                via: Via::Session,
            },
            csrf,
        }))
    }

    /// Ends a session (logout).
    pub async fn revoke_session(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.db
            .write(move |c| {
                let n = c.execute(
                    "UPDATE sessions SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
                    rusqlite::params![id, now_unix()],
                )?;
                if n == 0 {
                    return Err(Error::NotFound("no such session".into()));
                }
                Ok(())
            })
            .await
    }

    /// Deletes sessions that can no longer be used (older than `max_age`, or revoked).
    pub async fn prune_sessions(&self, max_age: Duration) -> Result<usize> {
        let cutoff =
            now_unix().saturating_sub(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX));
        self.db
            .write(move |c| {
                Ok(c.execute(
                    "DELETE FROM sessions WHERE created_at < ?1 OR revoked_at IS NOT NULL",
                    [cutoff],
                )?)
            })
            .await
    }
}

/// Parses an expiry such as `30d` or `12h`.
pub fn parse_expiry(s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s)
        .map_err(|e| Error::Invalid(format!("invalid expiry {s:?}: {e} (e.g. 30d, 12h)")))?;
    if d.is_zero() {
        return Err(Error::Invalid("expiry must be longer than zero".into()));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 2).unwrap();
        (dir, Auth::new(db))
    }

    #[test]
    fn scopes_admin_implies_all() {
        let admin = Scopes::of(&[Scope::Admin]);
        assert!(Scope::ALL.iter().all(|s| admin.allows(*s)));
        let rw = Scopes::parse_list("read,write").unwrap();
        assert!(rw.allows(Scope::Read) && rw.allows(Scope::Write));
        assert!(!rw.allows(Scope::Exec) && !rw.allows(Scope::Admin) && !rw.allows(Scope::Metrics));
        assert_eq!(rw.to_string(), "read,write");
        assert!(Scopes::parse_list("read,root").is_err());
        assert!(Scopes::parse_list("").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn token_round_trip_and_refusals() {
        let (_d, auth) = db();
        let t = auth
            .create_token("ci", Scopes::parse_list("read").unwrap(), None)
            .await
            .unwrap();
        assert!(t.token.starts_with("lhd_"));
        let actor = auth.verify_token(&t.token).await.unwrap().unwrap();
        assert_eq!(actor.name, "ci");
        assert!(actor.scopes.allows(Scope::Read) && !actor.scopes.allows(Scope::Write));

        // One flipped secret character: unknown.
        let mut bad = t.token.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            auth.verify_token(std::str::from_utf8(&bad).unwrap())
                .await
                .unwrap()
                .unwrap_err(),
            Refusal::Unknown
        );
        assert_eq!(
            auth.verify_token("Bearer nonsense")
                .await
                .unwrap()
                .unwrap_err(),
            Refusal::Malformed
        );

        // The secret is not stored anywhere.
        let secret = t.token.rsplit('_').next().unwrap().to_owned();
        let leaked: i64 = auth
            .db
            .read(move |c| Ok(c.query_row("SELECT count(*) FROM tokens WHERE instr(secret_hash, ?1) > 0 OR instr(scopes, ?1) > 0", [secret], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(leaked, 0);

        assert!(matches!(
            auth.create_token("ci", Scopes::of(&[Scope::Read]), None)
                .await,
            Err(Error::Conflict(_))
        ));
        auth.revoke_token("ci").await.unwrap();
        assert_eq!(
            auth.verify_token(&t.token).await.unwrap().unwrap_err(),
            Refusal::Revoked
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_token_is_refused() {
        let (_d, auth) = db();
        let t = auth
            .create_token(
                "short",
                Scopes::of(&[Scope::Read]),
                // Long enough not to run out on its own (expiry has whole-second steps, so a
                // 1 s token could already be expired at the first check); moved below.
                Some(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
        assert!(auth.verify_token(&t.token).await.unwrap().is_ok());
        let id = t.info.id.clone();
        auth.db
            .write(move |c| {
                Ok(c.execute(
                    "UPDATE tokens SET expires_at = ?2 WHERE id = ?1",
                    rusqlite::params![id, now_unix() - 1],
                )?)
            })
            .await
            .unwrap();
        // The row changed behind the verified-token cache (nothing in the daemon moves an
        // expiry); start from the database again.
        auth.forget(&t.info.id);
        assert_eq!(
            auth.verify_token(&t.token).await.unwrap().unwrap_err(),
            Refusal::Expired
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cached_token_is_refused_right_after_revocation_and_at_expiry() {
        let (_d, auth) = db();
        let t = auth
            .create_token("cached", Scopes::of(&[Scope::Read]), None)
            .await
            .unwrap();
        for _ in 0..3 {
            assert!(auth.verify_token(&t.token).await.unwrap().is_ok());
        }
        assert!(
            auth.cached(&t.info.id, &hash(t.token.rsplit('_').next().unwrap()))
                .is_some()
        );
        // A wrong secret for a cached id is still refused.
        let mut wrong = t.token.clone();
        wrong.pop();
        wrong.push(if t.token.ends_with('0') { '1' } else { '0' });
        assert_eq!(
            auth.verify_token(&wrong).await.unwrap().unwrap_err(),
            Refusal::Unknown
        );
        auth.revoke_token("cached").await.unwrap();
        assert_eq!(
            auth.verify_token(&t.token).await.unwrap().unwrap_err(),
            Refusal::Revoked
        );
        // Expiry ends a cached entry without any database read.
        let t = auth
            .create_token(
                "brief",
                Scopes::of(&[Scope::Read]),
                Some(Duration::from_secs(1)),
            )
            .await
            .unwrap();
        assert!(auth.verify_token(&t.token).await.unwrap().is_ok());
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(
            auth.verify_token(&t.token).await.unwrap().unwrap_err(),
            Refusal::Expired
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_login_link_works_once_before_it_expires_and_opens_an_admin_session() {
        let (_d, auth) = db();
        let admin = Actor::local(0);
        let ttl = Duration::from_secs(300);
        // Only for the local admin.
        let t = auth
            .create_token("root-ish", Scopes::of(&[Scope::Admin]), None)
            .await
            .unwrap();
        let token_actor = auth.verify_token(&t.token).await.unwrap().unwrap();
        assert!(auth.create_login_link(&token_actor, ttl).await.is_err());

        let made = auth.create_login_link(&admin, ttl).await.unwrap();
        let (id, secret) = made.link.split_once('.').unwrap();
        assert_eq!((id.len(), secret.len()), (32, 64));
        // Stored hashed: the secret is nowhere in the database.
        let (lid, sec) = (id.to_owned(), secret.to_owned());
        let found: i64 = auth
            .db
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM login_links WHERE id = ?1 AND instr(hex(secret_hash), upper(?2)) = 0",
                    rusqlite::params![lid, sec],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(found, 1);

        // A wrong secret for a real id, and garbage, are refused and do not burn the link.
        let wrong = format!("{id}.{}", "0".repeat(64));
        assert_eq!(
            auth.redeem_login_link(&wrong).await.unwrap().unwrap_err(),
            Refusal::Unknown
        );
        assert_eq!(
            auth.redeem_login_link("nope").await.unwrap().unwrap_err(),
            Refusal::Malformed
        );
        let actor = auth.redeem_login_link(&made.link).await.unwrap().unwrap();
        assert_eq!(actor.name, "local:uid=0");
        assert!(actor.scopes.allows(Scope::Admin));
        assert_eq!(
            auth.redeem_login_link(&made.link)
                .await
                .unwrap()
                .unwrap_err(),
            Refusal::Used
        );

        // Its session: no token, admin, revocable.
        let s = auth.create_session(&actor).await.unwrap();
        let long = Duration::from_secs(3600);
        let ok = auth
            .verify_session(&s.cookie, long, long)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ok.actor.name, "local:uid=0");
        assert_eq!(ok.actor.token_id, None);
        assert_eq!(ok.actor.via, Via::Session);
        assert!(ok.actor.scopes.allows(Scope::Admin));
        auth.revoke_session(ok.actor.session_id.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(
            auth.verify_session(&s.cookie, long, long)
                .await
                .unwrap()
                .unwrap_err(),
            Refusal::Revoked
        );

        // An expired link is refused (moved into the past rather than waited for).
        let late = auth.create_login_link(&admin, ttl).await.unwrap();
        let lid = late.link.split_once('.').unwrap().0.to_owned();
        auth.db
            .write(move |c| {
                Ok(c.execute(
                    "UPDATE login_links SET expires_at = expires_at - 301 WHERE id = ?1",
                    [lid],
                )?)
            })
            .await
            .unwrap();
        assert_eq!(
            auth.redeem_login_link(&late.link)
                .await
                .unwrap()
                .unwrap_err(),
            Refusal::Expired
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_end_with_their_token_and_when_idle() {
        let (_d, auth) = db();
        let t = auth
            .create_token("web", Scopes::of(&[Scope::Write]), None)
            .await
            .unwrap();
        let actor = auth.verify_token(&t.token).await.unwrap().unwrap();
        let s = auth.create_session(&actor).await.unwrap();
        let long = Duration::from_secs(3600);
        let ok = auth
            .verify_session(&s.cookie, long, long)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ok.csrf, s.csrf);
        assert_eq!(ok.actor.via, Via::Session);
        let sid = s.actor.session_id.clone().unwrap();
        auth.db
            .write(move |c| {
                Ok(c.execute(
                    "UPDATE sessions SET last_seen_at = last_seen_at - 120 WHERE id = ?1",
                    [sid],
                )?)
            })
            .await
            .unwrap();
        assert_eq!(
            auth.verify_session(&s.cookie, Duration::from_secs(60), long)
                .await
                .unwrap()
                .unwrap_err(),
            Refusal::Expired
        );
        assert!(
            auth.verify_session(&s.cookie, long, long)
                .await
                .unwrap()
                .is_ok()
        );
        auth.revoke_token(&t.info.id).await.unwrap();
        assert_eq!(
            auth.verify_session(&s.cookie, long, long)
                .await
                .unwrap()
                .unwrap_err(),
            Refusal::Revoked
        );
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
