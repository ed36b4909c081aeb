//! The state database: one SQLite file in WAL mode with `synchronous=FULL`, ordered
//! transactional migrations, a single writer thread that group-commits concurrent writes, and a
//! pool of read-only connections.
//!
//! Every write goes through [`Db::write`]: the writer thread takes all jobs that are waiting,
//! runs each inside its own savepoint of one transaction, commits once (one fsync for the whole
//! group) and only then answers each caller. So a caller that got `Ok` knows its change is on
//! disk, and one failing job does not undo the others. A job that makes all its checks before
//! its first change can go without the savepoint ([`Db::write_prechecked_then`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, oneshot};

use crate::error::{Error, Result};

/// The ordered schema migrations. Index + 1 is the schema version after applying it. Never edit
/// a released entry; append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the foundation: key/value facts about this installation.
    "CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) STRICT;",
    // 2: access control: API tokens (hashes only), browser sessions, the audit trail.
    "CREATE TABLE tokens (
        id           TEXT PRIMARY KEY NOT NULL,
        name         TEXT NOT NULL UNIQUE,
        secret_hash  BLOB NOT NULL,
        scopes       TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,
        revoked_at   INTEGER,
        last_used_at INTEGER
    ) STRICT;
    CREATE TABLE sessions (
        id           TEXT PRIMARY KEY NOT NULL,
        secret_hash  BLOB NOT NULL,
        token_id     TEXT NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
        csrf         TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        revoked_at   INTEGER
    ) STRICT;
    CREATE INDEX sessions_token ON sessions(token_id);
    CREATE TABLE audit (
        id         INTEGER PRIMARY KEY,
        at         INTEGER NOT NULL,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        target     TEXT NOT NULL,
        result     TEXT NOT NULL,
        client     TEXT NOT NULL,
        request_id TEXT NOT NULL,
        detail     TEXT NOT NULL
    ) STRICT;
    CREATE INDEX audit_at ON audit(at);
    CREATE INDEX audit_actor ON audit(actor, id);
    CREATE INDEX audit_action ON audit(action, id);",
    // 3: the key-value store: current entries, the change log that watches resume from, and
    // the store-wide revision (a single row, so a rolled-back change leaves no gap).
    "CREATE TABLE kv (
        key        TEXT PRIMARY KEY NOT NULL,
        value      TEXT NOT NULL,
        version    INTEGER NOT NULL,
        expires_at INTEGER
    ) STRICT;
    CREATE INDEX kv_expiry ON kv(expires_at) WHERE expires_at IS NOT NULL;
    CREATE TABLE kv_changes (
        id       INTEGER PRIMARY KEY,
        revision INTEGER NOT NULL,
        at       INTEGER NOT NULL,
        op       TEXT NOT NULL CHECK (op IN ('put', 'delete')),
        key      TEXT NOT NULL,
        value    TEXT
    ) STRICT;
    CREATE INDEX kv_changes_revision ON kv_changes(revision);
    CREATE TABLE kv_state (
        id        INTEGER PRIMARY KEY CHECK (id = 1),
        revision  INTEGER NOT NULL,
        compacted INTEGER NOT NULL
    ) STRICT;
    INSERT INTO kv_state(id, revision, compacted) VALUES (1, 0, 0);",
    // 4: the execution history of sandboxed jobs.
    "CREATE TABLE executions (
        seq          INTEGER PRIMARY KEY,
        id           TEXT NOT NULL UNIQUE,
        kind         TEXT NOT NULL,
        program_id   TEXT,
        label        TEXT NOT NULL,
        argv         TEXT NOT NULL,
        profile      TEXT NOT NULL,
        actor        TEXT NOT NULL,
        client       TEXT NOT NULL,
        request_id   TEXT NOT NULL,
        status       TEXT NOT NULL,
        exit_code    INTEGER,
        signal       TEXT,
        started_at   INTEGER NOT NULL,
        wall_ms      INTEGER NOT NULL,
        cpu_ms       INTEGER NOT NULL,
        max_rss_kb   INTEGER NOT NULL,
        truncated    INTEGER NOT NULL,
        stdout_bytes INTEGER NOT NULL,
        stderr_bytes INTEGER NOT NULL,
        message      TEXT NOT NULL
    ) STRICT;
    CREATE INDEX executions_started ON executions(started_at);
    CREATE INDEX executions_program ON executions(program_id, seq);",
    // 5: the file store: one row per user path; the content is the blob file named `blob`
    // under files/blobs/ (an internal id, never the user's name).
    "CREATE TABLE files (
        path         TEXT PRIMARY KEY NOT NULL,
        blob         TEXT NOT NULL UNIQUE,
        size         INTEGER NOT NULL,
        sha256       TEXT NOT NULL,
        content_type TEXT NOT NULL,
        created_ms   INTEGER NOT NULL,
        modified_ms  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX files_size ON files(size, path);
    CREATE INDEX files_modified ON files(modified_ms, path);",
    // 6: the program store (files under $STATE_DIRECTORY/programs/<id>/; runs in executions).
    "CREATE TABLE programs (
        id              TEXT PRIMARY KEY NOT NULL,
        name            TEXT NOT NULL,
        kind            TEXT NOT NULL CHECK (kind IN ('file', 'project')),
        files           TEXT NOT NULL,
        main            TEXT,
        runtime         TEXT,
        size            INTEGER NOT NULL,
        sha256          TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        run_count       INTEGER NOT NULL,
        last_run_status TEXT,
        last_run_at     INTEGER
    ) STRICT;",
    // 7: the dashboard's metrics history: one row per slot (10 s points for an hour, 1 min
    // points for a day), each series the mean of the samples in the slot.
    "CREATE TABLE metrics_history (
        resolution INTEGER NOT NULL CHECK (resolution IN (10, 60)),
        at         INTEGER NOT NULL,
        cpu        REAL,
        memory     REAL,
        disk       REAL,
        load1      REAL,
        net_rx     REAL,
        net_tx     REAL,
        PRIMARY KEY (resolution, at)
    ) STRICT, WITHOUT ROWID;",
    // 8: a key's value is kept once, in its change-log row: a key row points at the put that
    // holds it (writing a value into both tables wrote every value twice on each PUT). A key
    // whose put was already trimmed from the log gets it back (revision unchanged, at 0; it is
    // at or below `compacted`, so no watch replays it). Trimming keeps the puts keys point at.
    "CREATE TABLE kv_new (
        key        TEXT PRIMARY KEY NOT NULL,
        version    INTEGER NOT NULL,
        change     INTEGER NOT NULL,
        expires_at INTEGER
    ) STRICT;
    INSERT INTO kv_changes(revision, at, op, key, value)
        SELECT k.version, 0, 'put', k.key, k.value FROM kv k
        WHERE NOT EXISTS (SELECT 1 FROM kv_changes c
                          WHERE c.revision = k.version AND c.key = k.key AND c.op = 'put');
    INSERT INTO kv_new(key, version, change, expires_at)
        SELECT k.key, k.version,
               (SELECT max(c.id) FROM kv_changes c
                WHERE c.revision = k.version AND c.key = k.key AND c.op = 'put'),
               k.expires_at
        FROM kv k;
    DROP TABLE kv;
    ALTER TABLE kv_new RENAME TO kv;
    CREATE INDEX kv_expiry ON kv(expires_at) WHERE expires_at IS NOT NULL;",
    // 9: the change log in two generations, one written at a time (`log_active`; its first
    // change id is `log_since`). Trimming only moves `compacted`; once all of the other
    // generation is trimmed, the puts keys still point at move to kv_kept (same ids) and the
    // generation is emptied in one statement. Deleting trimmed rows one at a time cost the
    // writer about as much as writing them (a 1 KiB row is a third of a page: every delete
    // rebalanced the b-tree).
    "ALTER TABLE kv_changes RENAME TO kv_log_a;
    DROP INDEX kv_changes_revision;
    CREATE INDEX kv_log_a_revision ON kv_log_a(revision);
    CREATE TABLE kv_log_b (
        id       INTEGER PRIMARY KEY,
        revision INTEGER NOT NULL,
        at       INTEGER NOT NULL,
        op       TEXT NOT NULL CHECK (op IN ('put', 'delete')),
        key      TEXT NOT NULL,
        value    TEXT
    ) STRICT;
    CREATE INDEX kv_log_b_revision ON kv_log_b(revision);
    CREATE TABLE kv_kept (
        id       INTEGER PRIMARY KEY,
        revision INTEGER NOT NULL,
        key      TEXT NOT NULL,
        value    TEXT NOT NULL
    ) STRICT;
    ALTER TABLE kv_state ADD COLUMN log_active INTEGER NOT NULL DEFAULT 0
        CHECK (log_active IN (0, 1));
    ALTER TABLE kv_state ADD COLUMN log_since INTEGER NOT NULL DEFAULT 1;",
    // 10: the audit trail in two tables: events land in `audit_recent` (no index but its
    // ids), and `audit::seal` moves them into `audit_log` with its three indexes in bulk
    // every second. Kept per event, the indexes added pages to every commit of data writes
    // in the WAL (appends to an index b-tree split it every few commits, rewriting three
    // pages each time); in bulk they are written once per page.
    // `audit` stays the name of the whole trail, as a view.
    "ALTER TABLE audit RENAME TO audit_log;
    CREATE TABLE audit_recent (
        id         INTEGER PRIMARY KEY,
        at         INTEGER NOT NULL,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        target     TEXT NOT NULL,
        result     TEXT NOT NULL,
        client     TEXT NOT NULL,
        request_id TEXT NOT NULL,
        detail     TEXT NOT NULL
    ) STRICT;
    CREATE VIEW audit AS
        SELECT id, at, actor, action, target, result, client, request_id, detail FROM audit_log
        UNION ALL
        SELECT id, at, actor, action, target, result, client, request_id, detail FROM audit_recent;",
    // 11: a key row holds its value's size in bytes, so the store's totals (the sampler's
    // kv keys and bytes) are a scan of the key rows instead of a read of every value.
    "ALTER TABLE kv ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    UPDATE kv SET size = coalesce(length(CAST(
        coalesce((SELECT value FROM kv_log_a WHERE id = kv.change),
                 (SELECT value FROM kv_log_b WHERE id = kv.change),
                 (SELECT value FROM kv_kept WHERE id = kv.change)) AS BLOB)), 0);",
    // 12: what held each run to its memory limit (`cgroup` or `rlimit`; empty before).
    "ALTER TABLE executions ADD COLUMN memory_limited_by TEXT NOT NULL DEFAULT '';",
    // 13: terminal sessions (jobs::terminals): one row per session, kept after its end so
    // list and inspect work after a restart.
    "CREATE TABLE terminals (
        id              TEXT PRIMARY KEY NOT NULL,
        owner           TEXT NOT NULL,
        actor           TEXT NOT NULL,
        client          TEXT NOT NULL,
        kind            TEXT NOT NULL,
        program_id      TEXT,
        argv            TEXT NOT NULL,
        profile         TEXT NOT NULL,
        cols            INTEGER NOT NULL,
        rows            INTEGER NOT NULL,
        created_at      INTEGER NOT NULL,
        ended_at        INTEGER,
        end_reason      TEXT,
        exit_code       INTEGER,
        signal          TEXT,
        bytes_in        INTEGER NOT NULL DEFAULT 0,
        bytes_out       INTEGER NOT NULL DEFAULT 0,
        recording_bytes INTEGER NOT NULL DEFAULT 0,
        recording_truncated INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX terminals_owner ON terminals(owner);",
    // 14: one-time login links (`localhostd login-url`): only the secret's hash, single use,
    // short-lived. Sessions of the local admin opened with one have no token: `token_id`
    // becomes optional and `local_actor` names such a session's actor (exactly one of them).
    "CREATE TABLE sessions_new (
        id           TEXT PRIMARY KEY NOT NULL,
        secret_hash  BLOB NOT NULL,
        token_id     TEXT REFERENCES tokens(id) ON DELETE CASCADE,
        csrf         TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        revoked_at   INTEGER,
        local_actor  TEXT,
        CHECK ((token_id IS NULL) <> (local_actor IS NULL))
    ) STRICT;
    INSERT INTO sessions_new(id, secret_hash, token_id, csrf, created_at, last_seen_at, revoked_at)
        SELECT id, secret_hash, token_id, csrf, created_at, last_seen_at, revoked_at FROM sessions;
    DROP TABLE sessions;
    ALTER TABLE sessions_new RENAME TO sessions;
    CREATE INDEX sessions_token ON sessions(token_id);
    CREATE TABLE login_links (
        id          TEXT PRIMARY KEY NOT NULL,
        secret_hash BLOB NOT NULL,
        actor       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        used_at     INTEGER
    ) STRICT;",
    // 15: every execution has a row from its submission (`state` queued, running, finished;
    // `status` is '' until it is finished), the owner key of the token that started it (the
    // rule of terminal sessions; '' for rows from before, which only admin sees), when it
    // finished, and its stdout and stderr kept in `execution_output` (bounded by
    // `exec.keep-output-size`, for `exec.keep-output-within`) or why not.
    "ALTER TABLE executions ADD COLUMN state TEXT NOT NULL DEFAULT 'finished'
        CHECK (state IN ('queued', 'running', 'finished'));
    ALTER TABLE executions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE executions ADD COLUMN finished_at INTEGER;
    ALTER TABLE executions ADD COLUMN output_kept INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN output_reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE executions ADD COLUMN outputs TEXT;
    UPDATE executions SET output_reason = 'recorded before outputs were kept';
    CREATE INDEX executions_owner ON executions(owner, seq);
    CREATE INDEX executions_unfinished ON executions(state) WHERE state <> 'finished';
    CREATE TABLE execution_output (
        id     TEXT PRIMARY KEY NOT NULL,
        at     INTEGER NOT NULL,
        stdout BLOB NOT NULL,
        stderr BLOB NOT NULL
    ) STRICT;
    CREATE INDEX execution_output_at ON execution_output(at);",
    // 16: the public tunnels an admin asked for (`/api/v1/tunnels`): up with these options, or
    // down; a restarted daemon brings the ones that are up back.
    "CREATE TABLE tunnels (
        provider   TEXT PRIMARY KEY NOT NULL,
        desired    TEXT NOT NULL CHECK (desired IN ('up', 'down')),
        options    TEXT NOT NULL,
        changed_at INTEGER NOT NULL,
        changed_by TEXT NOT NULL
    ) STRICT;",
];

/// The schema at `SCHEMA_VERSION`, as `MIGRATIONS` leave it, for a new database: created in
/// one step instead of replaying every migration (renames, added columns, a table rebuilt),
/// whose SQLite code would otherwise stay in a new daemon's memory. Written again with every
/// migration; `tests::a_new_database_gets_what_the_migrations_build` compares the two.
const SCHEMA: &str = "
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) STRICT;
    CREATE TABLE tokens (
        id           TEXT PRIMARY KEY NOT NULL,
        name         TEXT NOT NULL UNIQUE,
        secret_hash  BLOB NOT NULL,
        scopes       TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,
        revoked_at   INTEGER,
        last_used_at INTEGER
    ) STRICT;
    CREATE TABLE sessions (
        id           TEXT PRIMARY KEY NOT NULL,
        secret_hash  BLOB NOT NULL,
        token_id     TEXT REFERENCES tokens(id) ON DELETE CASCADE,
        csrf         TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        revoked_at   INTEGER,
        local_actor  TEXT,
        CHECK ((token_id IS NULL) <> (local_actor IS NULL))
    ) STRICT;
    CREATE INDEX sessions_token ON sessions(token_id);
    CREATE TABLE login_links (
        id          TEXT PRIMARY KEY NOT NULL,
        secret_hash BLOB NOT NULL,
        actor       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        used_at     INTEGER
    ) STRICT;
    CREATE TABLE audit_log (
        id         INTEGER PRIMARY KEY,
        at         INTEGER NOT NULL,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        target     TEXT NOT NULL,
        result     TEXT NOT NULL,
        client     TEXT NOT NULL,
        request_id TEXT NOT NULL,
        detail     TEXT NOT NULL
    ) STRICT;
    CREATE INDEX audit_at ON audit_log(at);
    CREATE INDEX audit_actor ON audit_log(actor, id);
    CREATE INDEX audit_action ON audit_log(action, id);
    CREATE TABLE kv_log_a (
        id       INTEGER PRIMARY KEY,
        revision INTEGER NOT NULL,
        at       INTEGER NOT NULL,
        op       TEXT NOT NULL CHECK (op IN ('put', 'delete')),
        key      TEXT NOT NULL,
        value    TEXT
    ) STRICT;
    CREATE TABLE kv_state (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        revision   INTEGER NOT NULL,
        compacted  INTEGER NOT NULL,
        log_active INTEGER NOT NULL DEFAULT 0 CHECK (log_active IN (0, 1)),
        log_since  INTEGER NOT NULL DEFAULT 1
    ) STRICT;
    INSERT INTO kv_state(id, revision, compacted) VALUES (1, 0, 0);
    CREATE TABLE executions (
        seq          INTEGER PRIMARY KEY,
        id           TEXT NOT NULL UNIQUE,
        kind         TEXT NOT NULL,
        program_id   TEXT,
        label        TEXT NOT NULL,
        argv         TEXT NOT NULL,
        profile      TEXT NOT NULL,
        actor        TEXT NOT NULL,
        client       TEXT NOT NULL,
        request_id   TEXT NOT NULL,
        status       TEXT NOT NULL,
        exit_code    INTEGER,
        signal       TEXT,
        started_at   INTEGER NOT NULL,
        wall_ms      INTEGER NOT NULL,
        cpu_ms       INTEGER NOT NULL,
        max_rss_kb   INTEGER NOT NULL,
        truncated    INTEGER NOT NULL,
        stdout_bytes INTEGER NOT NULL,
        stderr_bytes INTEGER NOT NULL,
        message      TEXT NOT NULL,
        memory_limited_by TEXT NOT NULL DEFAULT '',
        state        TEXT NOT NULL DEFAULT 'finished'
            CHECK (state IN ('queued', 'running', 'finished')),
        owner        TEXT NOT NULL DEFAULT '',
        finished_at  INTEGER,
        output_kept  INTEGER NOT NULL DEFAULT 0,
        output_reason TEXT NOT NULL DEFAULT '',
        outputs      TEXT
    ) STRICT;
    CREATE INDEX executions_started ON executions(started_at);
    CREATE INDEX executions_program ON executions(program_id, seq);
    CREATE INDEX executions_owner ON executions(owner, seq);
    CREATE INDEX executions_unfinished ON executions(state) WHERE state <> 'finished';
    CREATE TABLE execution_output (
        id     TEXT PRIMARY KEY NOT NULL,
        at     INTEGER NOT NULL,
        stdout BLOB NOT NULL,
        stderr BLOB NOT NULL
    ) STRICT;
    CREATE INDEX execution_output_at ON execution_output(at);
    CREATE TABLE files (
        path         TEXT PRIMARY KEY NOT NULL,
        blob         TEXT NOT NULL UNIQUE,
        size         INTEGER NOT NULL,
        sha256       TEXT NOT NULL,
        content_type TEXT NOT NULL,
        created_ms   INTEGER NOT NULL,
        modified_ms  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX files_size ON files(size, path);
    CREATE INDEX files_modified ON files(modified_ms, path);
    CREATE TABLE programs (
        id              TEXT PRIMARY KEY NOT NULL,
        name            TEXT NOT NULL,
        kind            TEXT NOT NULL CHECK (kind IN ('file', 'project')),
        files           TEXT NOT NULL,
        main            TEXT,
        runtime         TEXT,
        size            INTEGER NOT NULL,
        sha256          TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        run_count       INTEGER NOT NULL,
        last_run_status TEXT,
        last_run_at     INTEGER
    ) STRICT;
    CREATE TABLE metrics_history (
        resolution INTEGER NOT NULL CHECK (resolution IN (10, 60)),
        at         INTEGER NOT NULL,
        cpu        REAL,
        memory     REAL,
        disk       REAL,
        load1      REAL,
        net_rx     REAL,
        net_tx     REAL,
        PRIMARY KEY (resolution, at)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE kv (
        key        TEXT PRIMARY KEY NOT NULL,
        version    INTEGER NOT NULL,
        change     INTEGER NOT NULL,
        expires_at INTEGER,
        size       INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX kv_expiry ON kv(expires_at) WHERE expires_at IS NOT NULL;
    CREATE INDEX kv_log_a_revision ON kv_log_a(revision);
    CREATE TABLE kv_log_b (
        id       INTEGER PRIMARY KEY,
        revision INTEGER NOT NULL,
        at       INTEGER NOT NULL,
        op       TEXT NOT NULL CHECK (op IN ('put', 'delete')),
        key      TEXT NOT NULL,
        value    TEXT
    ) STRICT;
    CREATE INDEX kv_log_b_revision ON kv_log_b(revision);
    CREATE TABLE kv_kept (
        id       INTEGER PRIMARY KEY,
        revision INTEGER NOT NULL,
        key      TEXT NOT NULL,
        value    TEXT NOT NULL
    ) STRICT;
    CREATE TABLE audit_recent (
        id         INTEGER PRIMARY KEY,
        at         INTEGER NOT NULL,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        target     TEXT NOT NULL,
        result     TEXT NOT NULL,
        client     TEXT NOT NULL,
        request_id TEXT NOT NULL,
        detail     TEXT NOT NULL
    ) STRICT;
    CREATE VIEW audit AS
        SELECT id, at, actor, action, target, result, client, request_id, detail FROM audit_log
        UNION ALL
        SELECT id, at, actor, action, target, result, client, request_id, detail FROM audit_recent;
    CREATE TABLE terminals (
        id              TEXT PRIMARY KEY NOT NULL,
        owner           TEXT NOT NULL,
        actor           TEXT NOT NULL,
        client          TEXT NOT NULL,
        kind            TEXT NOT NULL,
        program_id      TEXT,
        argv            TEXT NOT NULL,
        profile         TEXT NOT NULL,
        cols            INTEGER NOT NULL,
        rows            INTEGER NOT NULL,
        created_at      INTEGER NOT NULL,
        ended_at        INTEGER,
        end_reason      TEXT,
        exit_code       INTEGER,
        signal          TEXT,
        bytes_in        INTEGER NOT NULL DEFAULT 0,
        bytes_out       INTEGER NOT NULL DEFAULT 0,
        recording_bytes INTEGER NOT NULL DEFAULT 0,
        recording_truncated INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX terminals_owner ON terminals(owner);
    CREATE TABLE tunnels (
        provider   TEXT PRIMARY KEY NOT NULL,
        desired    TEXT NOT NULL CHECK (desired IN ('up', 'down')),
        options    TEXT NOT NULL,
        changed_at INTEGER NOT NULL,
        changed_by TEXT NOT NULL
    ) STRICT;";

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Most jobs one group commit takes, so one transaction stays short.
const MAX_GROUP: usize = 256;

/// Jobs the writer's queue holds before a submitter has to wait.
const WRITE_QUEUE: usize = 4 * MAX_GROUP;

/// WAL frames (pages) written since the checkpointer's last pass that start its next pass;
/// SQLite's own auto-checkpoint default.
const CHECKPOINT_FRAMES: i32 = 1000;

/// WAL frames after which the writer, between two transactions, checkpoints what is left
/// itself, so the next transaction starts the WAL over from its beginning. A background pass
/// alone cannot do that under a steady stream of commits: it is always a commit or two
/// behind. The writer waits for no pass in progress before twice this many frames (the
/// background starts no new pass meanwhile): the WAL stays under ~64 MiB, 128 at worst.
const RESTART_FRAMES: i32 = 16_384;

type Completion = Box<dyn FnOnce(Option<&str>) + Send>;
/// A job run in the writer's transaction: its completion, and whether it failed in a way that
/// may have left part of its changes behind (then the whole group is rolled back).
type Job = Box<dyn FnOnce(&Connection) -> (Completion, bool) + Send>;

/// The outcome of a write handed to the writer by [`Db::write_queued`].
pub struct Queued<T>(oneshot::Receiver<Result<T>>);

impl<T> Queued<T> {
    /// Resolves once the write committed (or failed).
    pub async fn outcome(self) -> Result<T> {
        self.0
            .await
            .map_err(|_| Error::Unavailable("the database writer stopped".into()))?
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer_tx: Mutex<Option<mpsc::SyncSender<Job>>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    reader_permits: Semaphore,
    /// `storage.min-free-disk` in bytes, for [`Db::ensure_free`]; 0 until the daemon sets it.
    min_free_disk: AtomicU64,
}

impl Db {
    /// Opens (creating if needed) the database at `path`, applies migrations and starts the
    /// writer thread. Refuses a database whose schema is newer than this binary knows.
    pub fn open(path: &Path, readers: usize) -> Result<Db> {
        let mut writer = Connection::open(path)?;
        configure(&writer)?;
        migrate(&mut writer, path)?;
        let checkpointer = Checkpointer::start(path, &mut writer)?;
        // One reader now (so a database readers cannot open fails here, not at the first
        // request); the others as concurrent reads need them, up to `readers`. Each holds
        // memory (parsed schema, page cache) that an idle daemon need not hold.
        let pool = vec![open_reader(path)?];
        // Room for a few group commits' worth of jobs (`MAX_GROUP` each); past that a submitter
        // waits (`submit`). The bound is allocated and touched up front, so every slot is
        // resident in the idle daemon.
        let (tx, rx) = mpsc::sync_channel::<Job>(WRITE_QUEUE);
        let thread = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || writer_loop(writer, rx, checkpointer))?;
        Ok(Db {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer_tx: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(thread)),
                readers: Mutex::new(pool),
                reader_permits: Semaphore::new(readers),
                min_free_disk: AtomicU64::new(0),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Sets the free-disk floor (`storage.min-free-disk`) that [`Db::ensure_free`] keeps; the
    /// daemon sets it at start and on every reload.
    pub fn set_min_free_disk(&self, floor: crate::config::ByteSize) {
        self.inner
            .min_free_disk
            .store(floor.bytes(), Ordering::Relaxed);
    }

    /// Refuses (507, `Error::InsufficientStorage`) a write that adds about `more` bytes of rows
    /// when it would leave the database's filesystem with less than the floor free. Asked
    /// before a write that grows the database (a change and its audit row, an audit event, a
    /// change-log row that holds a value), so a refused one has written nothing; deletes and
    /// the daemon's upkeep are not asked, so space can always be freed.
    pub fn ensure_free(&self, more: u64) -> Result<()> {
        let floor = self.inner.min_free_disk.load(Ordering::Relaxed);
        if floor == 0 {
            return Ok(());
        }
        let dir = match self.inner.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        crate::util::disk::ensure_free(dir, crate::config::ByteSize(floor), more)
    }

    /// Runs `f` in the writer's transaction. Returns once the transaction holding this change
    /// has committed (fsync'd), or with the error of `f` (whose changes are rolled back alone).
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.write_then(f, |_| {}).await
    }

    /// Like `write`; `committed` runs on the writer thread right after the commit succeeded
    /// and before the caller is answered (so before anyone can learn of the change), in
    /// commit order. It must be quick and must not touch the database.
    pub async fn write_then<T, F, C>(&self, f: F, committed: C) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        C: FnOnce(&T) + Send + 'static,
    {
        self.run_job(move |conn| (run_in_savepoint(conn, f), false), committed)
            .await
    }

    /// Like `write_then`, without a savepoint around `f`. For a job on the hot path that makes
    /// every check that can fail (preconditions, existence) before its first change, so an
    /// error it returns then has changed nothing. The savepoint is not free: SQLite copies
    /// every page a job changes into the savepoint's journal first, on every PUT. Should `f`
    /// still fail on a database error, which may come
    /// after a change, the whole group commit is rolled back and every job in it fails.
    pub async fn write_prechecked_then<T, F, C>(&self, f: F, committed: C) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        C: FnOnce(&T) + Send + 'static,
    {
        self.run_job(
            move |conn| {
                let outcome = f(conn);
                let broke = matches!(outcome, Err(Error::Db(_)));
                (outcome, broke)
            },
            committed,
        )
        .await
    }

    /// Like `write`, but `f` is handed to the writer before this returns: writes queued one
    /// after another commit in that order, whether and whenever their outcome is awaited
    /// (dropping the returned [`Queued`] leaves the write to happen). For a write that must
    /// come before a later one without making its caller wait for the commit.
    pub fn write_queued<T, F>(&self, f: F) -> Result<Queued<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.queue_job(move |conn| (run_in_savepoint(conn, f), false), |_| {})
            .map(Queued)
    }

    async fn run_job<T, F, C>(&self, f: F, committed: C) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> (Result<T>, bool) + Send + 'static,
        C: FnOnce(&T) + Send + 'static,
    {
        Queued(self.queue_job(f, committed)?).outcome().await
    }

    /// Hands `f` to the writer; the receiver gets its outcome once its group committed.
    fn queue_job<T, F, C>(&self, f: F, committed: C) -> Result<oneshot::Receiver<Result<T>>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> (Result<T>, bool) + Send + 'static,
        C: FnOnce(&T) + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |conn: &Connection| {
            let (outcome, broke) = f(conn);
            let done: Completion = Box::new(move |commit_error: Option<&str>| {
                let result = match (commit_error, outcome) {
                    (_, Err(e)) => Err(e),
                    (Some(msg), Ok(_)) => Err(Error::Internal(format!("commit failed: {msg}"))),
                    (None, Ok(v)) => {
                        committed(&v);
                        Ok(v)
                    }
                };
                let _ = reply_tx.send(result);
            });
            (done, broke)
        });
        self.submit(job)?;
        Ok(reply_rx)
    }

    fn submit(&self, job: Job) -> Result<()> {
        let guard = self
            .inner
            .writer_tx
            .lock()
            .map_err(|_| Error::Internal("writer lock poisoned".into()))?;
        let tx = guard
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the database is closed".into()))?
            .clone();
        drop(guard);
        // The channel is bounded; a full queue means the writer is far behind: wait outside
        // the async runtime rather than block one of its threads.
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(job)) => tokio::task::block_in_place(|| tx.send(job))
                .map_err(|_| Error::Unavailable("the database writer stopped".into())),
            Err(mpsc::TrySendError::Disconnected(_)) => {
                Err(Error::Unavailable("the database writer stopped".into()))
            }
        }
    }

    /// Whether the writer thread answers (a round trip through its queue and an empty
    /// transaction) within `timeout`. The watchdog pings only while this holds.
    pub async fn writer_answers(&self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, self.write(|_| Ok(()))).await,
            Ok(Ok(()))
        )
    }

    /// Runs `f` on a read-only connection from the pool, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let _permit = self
            .inner
            .reader_permits
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("the database is closed".into()))?;
        // None: every reader opened so far is busy, and the permit says one more may be.
        let idle = self
            .inner
            .readers
            .lock()
            .map_err(|_| Error::Internal("reader pool lock poisoned".into()))?
            .pop();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match idle {
                Some(c) => c,
                None => open_reader(&inner.path)?,
            };
            let result = f(&conn);
            if let Ok(mut pool) = inner.readers.lock() {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("reader task failed: {e}")))?
    }

    /// Hands back the page caches of the writer and of the idle readers (PRAGMA
    /// shrink_memory): for an idle daemon, which reads them back from the OS's cache if work
    /// comes. Idle readers past the first are closed (each holds its parsed schema and
    /// buffers; concurrent reads open them again). Readers in use are left alone.
    pub async fn shrink_memory(&self) -> Result<()> {
        if let Ok(mut pool) = self.inner.readers.lock() {
            pool.truncate(1);
            for conn in pool.iter() {
                conn.execute_batch("PRAGMA shrink_memory")?;
            }
        }
        self.write(|c| Ok(c.execute_batch("PRAGMA shrink_memory")?))
            .await
    }

    /// Stops the writer after the jobs already queued, checkpoints the WAL into the main file
    /// and closes every connection. Idempotent.
    pub fn close(&self) {
        self.inner.reader_permits.close();
        if let Ok(mut pool) = self.inner.readers.lock() {
            pool.clear();
        }
        if let Ok(mut tx) = self.inner.writer_tx.lock() {
            tx.take();
        }
        let thread = self
            .inner
            .writer_thread
            .lock()
            .ok()
            .and_then(|mut t| t.take());
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!("database writer thread panicked");
        }
    }
}

/// The first string after every string that starts with `prefix` (None: no bound), so a prefix
/// is the range `[prefix, upper)` in the byte order SQLite compares TEXT in.
pub fn prefix_upper(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut n = u32::from(last) + 1;
        if (0xD800..0xE000).contains(&n) {
            n = 0xE000;
        }
        if let Some(c) = char::from_u32(n) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The WHERE clause of a listing: a condition for each filter given and none for the others,
/// so SQLite can pick the index the filters allow (one statement written with
/// `(?1 IS NULL OR col = ?1)` for every case makes it scan the table).
#[derive(Default)]
pub struct Conditions {
    conds: Vec<String>,
    args: Vec<rusqlite::types::Value>,
}

impl Conditions {
    /// Adds a parameter; returns its number (for `?N`).
    pub fn arg(&mut self, v: impl Into<rusqlite::types::Value>) -> usize {
        self.args.push(v.into());
        self.args.len()
    }

    /// Adds a condition written with parameters from `arg`.
    pub fn cond(&mut self, c: String) {
        self.conds.push(c);
    }

    /// Adds `<left> ?N`, e.g. `add("actor =", name)`.
    pub fn add(&mut self, left: &str, v: impl Into<rusqlite::types::Value>) {
        let n = self.arg(v);
        self.cond(format!("{left} ?{n}"));
    }

    /// `WHERE …` (empty without conditions), the number of a last parameter holding `limit`,
    /// and the parameters in order.
    pub fn finish(mut self, limit: i64) -> (String, usize, Vec<rusqlite::types::Value>) {
        let filter = if self.conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conds.join(" AND "))
        };
        let n = self.arg(limit);
        (filter, n, self.args)
    }
}

/// The query plan SQLite chooses for `sql` with `args`, its steps joined by "; " (tests check
/// that listings seek into the index they were written for).
#[cfg(test)]
pub fn query_plan(
    c: &Connection,
    sql: &str,
    args: Vec<rusqlite::types::Value>,
) -> rusqlite::Result<String> {
    let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
    let rows = st
        .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows.join("; "))
}

/// For migration tests: a database at `path` made by the first `version` migrations, with
/// `seed` run in it and `user_version` set, as an older release would have left it.
#[cfg(test)]
pub(crate) fn database_at_schema(path: &Path, version: usize, seed: &str) {
    let c = Connection::open(path).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    for sql in &MIGRATIONS[..version] {
        c.execute_batch(sql).unwrap();
    }
    c.execute_batch(seed).unwrap();
    c.pragma_update(None, "user_version", version as i64)
        .unwrap();
}

/// A read-only connection of the reader pool.
fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Internal(format!(
            "cannot switch the database to WAL mode (got {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Each job runs in a savepoint, whose undo pages SQLite keeps in a statement journal: a
    // temporary file opened, written and closed for every group commit unless kept in memory.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Whether the database has no schema at all (a new file).
fn is_empty(conn: &Connection) -> Result<bool> {
    Ok(
        !conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_schema)", [], |r| {
            r.get::<_, bool>(0)
        })?,
    )
}

/// Applies every migration newer than the database's `user_version`, each in its own
/// transaction together with the version bump; a new database gets `SCHEMA` in one.
/// Refuses a database from the future.
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            path: path.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found == 0 && is_empty(conn)? {
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        tracing::info!(schema_version = SCHEMA_VERSION, "created the database");
        return Ok(());
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let version = i as i64 + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(schema_version = version, "applied database migration");
    }
    Ok(())
}

fn run_in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    // Cached statements: parsing these two for every write was a visible share of a PUT.
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match f(conn) {
        Ok(v) => {
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(v)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

/// Copies the WAL into the database file on its own thread and connection, so the writer's
/// commits do not wait for that (SQLite's auto-checkpoint runs inside the commit that crosses
/// the threshold: a write, an fsync of the database file, tens of ms). Fed by the writer
/// connection's WAL hook, which reports the WAL's size after every commit.
struct Checkpointer {
    /// WAL frames after the writer's last commit.
    frames: Arc<AtomicI32>,
    /// Held for a pass, by the checkpointer or by the writer (see `RESTART_FRAMES`).
    busy: Arc<Mutex<()>>,
    /// The writer waits to restart the WAL: the checkpointer starts no new pass.
    restart_wanted: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path, writer: &mut Connection) -> Result<Checkpointer> {
        let path = path.to_owned();
        let frames = Arc::new(AtomicI32::new(0));
        let busy = Arc::new(Mutex::new(()));
        let (kick, kicked) = mpsc::sync_channel::<()>(1);
        let seen = frames.clone();
        let mut last_pass_at = 0;
        // Replaces SQLite's auto-checkpoint (itself a WAL hook).
        writer.wal_hook(Some(
            move |_: &mut rusqlite::hooks::Wal, n: std::ffi::c_int| {
                seen.store(n, Ordering::Relaxed);
                if n < last_pass_at {
                    last_pass_at = 0; // the WAL started over
                }
                if n - last_pass_at >= CHECKPOINT_FRAMES && kick.try_send(()).is_ok() {
                    last_pass_at = n;
                }
                Ok(())
            },
        ))?;
        let held = busy.clone();
        let restart_wanted = Arc::new(AtomicBool::new(false));
        let yield_to_writer = restart_wanted.clone();
        let thread = std::thread::Builder::new()
            .name("db-checkpoint".into())
            .spawn(move || {
                // Opened at the first pass: a daemon that writes little never needs it.
                let mut conn: Option<Connection> = None;
                // Ends when the writer's hook (holding the sender) is dropped.
                while kicked.recv().is_ok() {
                    if yield_to_writer.load(Ordering::Relaxed) {
                        continue;
                    }
                    let Ok(_pass) = held.lock() else { return };
                    let c = match conn.take().map_or_else(|| checkpoint_connection(&path), Ok) {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot open the checkpoint connection");
                            continue;
                        }
                    };
                    if let Err(e) = checkpoint(c) {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
            })?;
        Ok(Checkpointer {
            frames,
            busy,
            restart_wanted,
            thread: Some(thread),
        })
    }

    /// After a commit, on the writer's connection: when the WAL is past `RESTART_FRAMES` and
    /// no background pass runs, checkpoint the rest here, so the next transaction restarts it.
    fn after_commit(&self, writer: &Connection) {
        let frames = self.frames.load(Ordering::Relaxed);
        if frames < RESTART_FRAMES {
            return;
        }
        self.restart_wanted.store(true, Ordering::Relaxed);
        let pass = if frames >= RESTART_FRAMES.saturating_mul(2) {
            self.busy.lock().ok()
        } else {
            self.busy.try_lock().ok()
        };
        let Some(_pass) = pass else {
            return; // a pass is running; the next commit asks again
        };
        match checkpoint(writer) {
            Ok(true) => {
                self.frames.store(0, Ordering::Relaxed);
                self.restart_wanted.store(false, Ordering::Relaxed);
            }
            Ok(false) => {} // a reader still uses old frames; next commit tries again
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }

    /// Unhooks the writer and waits for a pass in progress to end.
    fn stop(mut self, writer: &mut Connection) {
        let none: Option<fn(&mut rusqlite::hooks::Wal, std::ffi::c_int) -> rusqlite::Result<()>> =
            None;
        if let Err(e) = writer.wal_hook(none) {
            tracing::warn!(error = %e, "cannot remove the WAL hook");
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("database checkpoint thread panicked");
        }
    }
}

fn checkpoint_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // A checkpoint syncs the WAL before copying and the database file after, as the writer's
    // would: the WAL is only reused once what it held is on disk in its place.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// A PASSIVE checkpoint (never waits for readers or the writer); whether it copied every
/// frame of the WAL.
fn checkpoint(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        let (busy, log, done): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        Ok(busy == 0 && log == done)
    })
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Job>, checkpointer: Checkpointer) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = e.to_string();
            tracing::error!(error = %msg, "database writer cannot begin a transaction");
            // Dropping the jobs unrun drops their reply channels: each caller gets
            // `Unavailable`, and nothing was changed.
            drop(jobs);
            continue;
        }
        let mut broken = false;
        let completions: Vec<Completion> = jobs
            .into_iter()
            .map(|job| {
                let (done, broke) = job(&conn);
                broken |= broke;
                done
            })
            .collect();
        let msg = if broken {
            tracing::error!("a job without a savepoint failed on a database error: rolling back");
            let _ = conn.execute_batch("ROLLBACK");
            Some("a database error in the same group commit rolled it back".to_owned())
        } else {
            match conn.execute_batch("COMMIT") {
                Ok(()) => None,
                Err(e) => {
                    tracing::error!(error = %e, "database commit failed");
                    let _ = conn.execute_batch("ROLLBACK");
                    Some(e.to_string())
                }
            }
        };
        for done in completions {
            done(msg.as_deref());
        }
        checkpointer.after_commit(&conn);
    }
    checkpointer.stop(&mut conn);
    if let Err(e) = conn.pragma_query(None, "wal_checkpoint", |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint at close failed");
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the database failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_temp() -> (tempfile::TempDir, Db) {
        open_temp_with(2)
    }

    fn open_temp_with(readers: usize) -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), readers).unwrap();
        (dir, db)
    }

    /// `.cargo/config.toml` builds the bundled SQLite without the extensions nothing here uses
    /// (their code would be resident in an idle daemon). A build without that file's flags
    /// fails here.
    #[test]
    fn sqlite_is_built_without_unused_extensions() {
        let c = Connection::open_in_memory().unwrap();
        let mut st = c.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for unused in ["ENABLE_FTS3", "ENABLE_FTS5", "ENABLE_RTREE", "SOUNDEX"] {
            assert!(
                !options.iter().any(|o| o == unused),
                "{unused} is compiled in: {options:?}"
            );
        }
        assert!(
            options.iter().any(|o| o == "OMIT_LOAD_EXTENSION"),
            "extension loading is compiled in: {options:?}"
        );
        let fts = c.execute_batch("CREATE VIRTUAL TABLE t USING fts5(x)");
        assert!(fts.is_err(), "fts5 is available");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_set_schema_version_and_wal() {
        let (_d, db) = open_temp();
        let (v, mode, sync): (i64, String, i64) = db
            .write(|c| {
                Ok((
                    c.pragma_query_value(None, "user_version", |r| r.get(0))?,
                    c.pragma_query_value(None, "journal_mode", |r| r.get(0))?,
                    c.pragma_query_value(None, "synchronous", |r| r.get(0))?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
        db.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shrinking_memory_closes_idle_readers_but_one_and_reads_go_on() {
        let (_d, db) = open_temp_with(4);
        // Three reads that wait for each other inside their connections: three readers.
        let together = Arc::new(std::sync::Barrier::new(3));
        let read = |db: Db, wait: Option<Arc<std::sync::Barrier>>| async move {
            db.read(move |c| {
                if let Some(w) = wait {
                    w.wait();
                }
                Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)
            })
            .await
            .unwrap()
        };
        let reads: Vec<_> = (0..3)
            .map(|_| tokio::spawn(read(db.clone(), Some(together.clone()))))
            .collect();
        for r in reads {
            assert_eq!(r.await.unwrap(), 1);
        }
        assert_eq!(
            db.inner.readers.lock().unwrap().len(),
            3,
            "three readers opened"
        );
        db.shrink_memory().await.unwrap();
        assert_eq!(db.inner.readers.lock().unwrap().len(), 1);
        assert_eq!(read(db.clone(), None).await, 1);
        db.close();
    }

    /// A write storm larger than twice `RESTART_FRAMES`: the WAL stays bounded (it would hold
    /// all 160 MiB without the restart, however busy the machine), the checkpoints reach the
    /// database file while it is open, and everything is there after a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_checkpointed_in_the_background_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        let db = Db::open(&p, 1).unwrap();
        db.write(|c| Ok(c.execute_batch("CREATE TABLE storm (id INTEGER PRIMARY KEY, b BLOB)")?))
            .await
            .unwrap();
        let page = 4096 + 24;
        let (jobs, blob) = (640_i64, 256 * 1024_usize);
        let mut wal_max = 0;
        for i in 0..jobs {
            db.write(move |c| {
                let b = vec![u8::try_from(i % 251).unwrap(); blob];
                c.execute(
                    "INSERT INTO storm (id, b) VALUES (?1, ?2)",
                    rusqlite::params![i, b],
                )?;
                Ok(())
            })
            .await
            .unwrap();
            wal_max = wal_max.max(
                std::fs::metadata(dir.path().join("t.db-wal"))
                    .unwrap()
                    .len(),
            );
        }
        let written = u64::try_from(jobs).unwrap() * u64::try_from(blob).unwrap();
        let bound = 2 * u64::try_from(RESTART_FRAMES).unwrap() * page + 2 * 80 * page;
        assert!(
            wal_max <= bound,
            "WAL reached {wal_max} bytes; bound {bound}"
        );
        assert!(wal_max < written, "the storm is larger than the bound");
        // The database file took the data while the writer was running.
        let mut main = 0;
        for _ in 0..100 {
            main = std::fs::metadata(&p).unwrap().len();
            if main > written / 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            main > written / 2,
            "database file is {main} bytes after {written} written"
        );
        // Nothing lost.
        db.close();
        let c = Connection::open(&p).unwrap();
        let (n, ok): (i64, String) = (
            c.query_row("SELECT count(*) FROM storm", [], |r| r.get(0))
                .unwrap(),
            c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap(),
        );
        assert_eq!((n, ok.as_str()), (jobs, "ok"));
    }

    #[test]
    fn reopening_applies_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        Db::open(&p, 1).unwrap().close();
        Db::open(&p, 1).unwrap().close();
        let c = Connection::open(&p).unwrap();
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        {
            let c = Connection::open(&p).unwrap();
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        match Db::open(&p, 1) {
            Err(Error::SchemaTooNew { found, known, .. }) => {
                assert_eq!(found, SCHEMA_VERSION + 1);
                assert_eq!(known, SCHEMA_VERSION);
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a newer schema was accepted"),
        }
        // And the file was not changed.
        let c = Connection::open(&p).unwrap();
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_job_rolls_back_alone_and_others_commit() {
        let (_d, db) = open_temp();
        let mut handles = Vec::new();
        for i in 0..50 {
            let db = db.clone();
            handles.push(tokio::spawn(async move {
                db.write(move |c| {
                    c.execute(
                        "INSERT INTO meta(key, value) VALUES (?1, 'x')",
                        [format!("k{i}")],
                    )?;
                    if i % 5 == 0 {
                        return Err(Error::Conflict("refused".into()));
                    }
                    Ok(())
                })
                .await
            }));
        }
        let mut ok = 0;
        for h in handles {
            if h.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 40);
        let n: i64 = db
            .read(|c| {
                Ok(
                    c.query_row("SELECT count(*) FROM meta WHERE key LIKE 'k%'", [], |r| {
                        r.get(0)
                    })?,
                )
            })
            .await
            .unwrap();
        assert_eq!(n, 40, "exactly the successful jobs are committed");
        db.close();
    }

    /// A job without a savepoint: a refusal before its first change leaves its group alone; a
    /// database error (which may come after a change) rolls the whole group back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prechecked_job_refused_alone_but_a_database_error_fails_its_group() {
        let (_d, db) = open_temp();
        let count = |db: Db| async move {
            db.read(|c| {
                Ok(
                    c.query_row("SELECT count(*) FROM meta WHERE key LIKE 'g%'", [], |r| {
                        r.get::<_, i64>(0)
                    })?,
                )
            })
            .await
            .unwrap()
        };
        for (round, fail_on_db) in [(0, false), (1, true)] {
            // The writer is held inside a first job while the next four queue up behind it, so
            // those four are taken together: one group commit.
            let (release, held) = std::sync::mpsc::channel::<()>();
            let (started_tx, started) = oneshot::channel::<()>();
            let gate = {
                let db = db.clone();
                tokio::spawn(async move {
                    db.write(move |_| {
                        let _ = started_tx.send(());
                        let _ = held.recv();
                        Ok(())
                    })
                    .await
                })
            };
            started.await.unwrap();
            let mut jobs = Vec::new();
            for i in 0..4 {
                let db = db.clone();
                let key = format!("g{round}-{i}");
                jobs.push(tokio::spawn(async move {
                    if i == 2 {
                        db.write_prechecked_then(
                            move |c| {
                                if !fail_on_db {
                                    return Err(Error::Conflict(
                                        "refused before any change".into(),
                                    ));
                                }
                                c.execute("INSERT INTO meta(key, value) VALUES (?1, 'x')", [&key])?;
                                c.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                                Ok(())
                            },
                            |_| {},
                        )
                        .await
                    } else {
                        db.write(move |c| {
                            c.execute("INSERT INTO meta(key, value) VALUES (?1, 'x')", [&key])?;
                            Ok(())
                        })
                        .await
                    }
                }));
            }
            // Let the four reach the queue before the writer is released.
            tokio::time::sleep(Duration::from_millis(200)).await;
            release.send(()).unwrap();
            gate.await.unwrap().unwrap();
            let mut results = Vec::new();
            for j in jobs {
                results.push(j.await.unwrap());
            }
            if fail_on_db {
                assert!(matches!(results[2], Err(Error::Db(_))), "{:?}", results[2]);
                for (i, r) in results.iter().enumerate() {
                    assert!(r.is_err(), "job {i} of a rolled-back group succeeded");
                }
                assert_eq!(
                    count(db.clone()).await,
                    3,
                    "round 0's three rows, none of round 1"
                );
            } else {
                assert!(matches!(results[2], Err(Error::Conflict(_))));
                for i in [0, 1, 3] {
                    assert!(results[i].is_ok(), "job {i}: {:?}", results[i]);
                }
                assert_eq!(count(db.clone()).await, 3);
            }
        }
        // The writer goes on.
        db.write(|c| Ok(c.execute("INSERT INTO meta(key, value) VALUES ('after', 'x')", [])?))
            .await
            .unwrap();
        db.close();
    }

    /// A new database gets `SCHEMA`; one built by the migrations, one after another, must be
    /// the same: the same tables, indexes and views with the same definitions (compared
    /// without whitespace and quotes, as SQLite keeps an altered table's text the way the
    /// ALTER left it), the same rows and the same schema version.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_database_gets_what_the_migrations_build() {
        let dir = tempfile::tempdir().unwrap();
        let (fresh, migrated) = (dir.path().join("fresh.db"), dir.path().join("old.db"));
        Db::open(&fresh, 1).unwrap().close();
        database_at_schema(&migrated, 1, "");
        Db::open(&migrated, 1).unwrap().close();
        let described = describe(&fresh);
        assert_eq!(described.0, SCHEMA_VERSION);
        assert!(described.1.len() > 20, "{:?}", described.1);
        assert_eq!(described, describe(&migrated));
    }

    /// (user_version, every object's type, name and definition, every table's rows).
    #[allow(clippy::type_complexity)]
    fn describe(p: &Path) -> (i64, Vec<(String, String, String)>, Vec<String>) {
        let c = Connection::open(p).unwrap();
        let version = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        let squeeze = |s: String| -> String {
            s.chars()
                .filter(|ch| !ch.is_whitespace() && *ch != '"')
                .collect()
        };
        let objects: Vec<(String, String, String)> = c
            .prepare(
                "SELECT type, name, coalesce(sql, '') FROM sqlite_schema
                 WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, squeeze(r.get(2)?))))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let mut rows = Vec::new();
        for (kind, table, _) in &objects {
            if kind != "table" {
                continue;
            }
            let mut st = c.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
            let n = st.column_count();
            let mut q = st.query([]).unwrap();
            while let Some(r) = q.next().unwrap() {
                let cells: Vec<String> = (0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect();
                rows.push(format!("{table}: {}", cells.join(", ")));
            }
        }
        (version, objects, rows)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_after_close_are_refused_and_data_survives() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        let db = Db::open(&p, 1).unwrap();
        db.write(|c| Ok(c.execute("INSERT INTO meta VALUES ('a', 'b')", [])?))
            .await
            .unwrap();
        assert!(db.writer_answers(Duration::from_secs(1)).await);
        db.close();
        assert!(matches!(
            db.write(|_| Ok(())).await,
            Err(Error::Unavailable(_))
        ));
        assert!(!db.writer_answers(Duration::from_millis(100)).await);
        let c = Connection::open(&p).unwrap();
        let v: String = c
            .query_row("SELECT value FROM meta WHERE key='a'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, "b");
    }
}
