//! One key-value face over MMSB and each peer, so every workload runs the same calls on each.
//! How each operation maps to each engine is written in `README.md` (keep the two in step).

use std::path::Path;
use std::sync::Mutex;

use mmsb::{Config, Delta, Durability, Location, MMSBState, PageId, PageMeta};

/// The engines compared. `MmsbMem` is MMSB without a log (only the routing scale workload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mmsb,
    MmsbMem,
    Redb,
    Fjall,
    Sqlite,
    Lmdb,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mmsb => "mmsb",
            Kind::MmsbMem => "mmsb-mem",
            Kind::Redb => "redb",
            Kind::Fjall => "fjall",
            Kind::Sqlite => "sqlite",
            Kind::Lmdb => "lmdb",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Mmsb, Kind::MmsbMem, Kind::Redb, Kind::Fjall, Kind::Sqlite, Kind::Lmdb]
            .into_iter()
            .find(|k| k.name() == s)
    }
}

/// What a store is opened for.
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    /// Every write durable (fsync'd) before it returns; otherwise written to OS buffers only.
    pub durable: bool,
    /// Keys `0..keys` (MMSB: one page per key).
    pub keys: u32,
    /// Value size in bytes (MMSB: the page size is this, at least 4 KiB).
    pub val: usize,
}

/// The operations every workload uses.
pub trait Store: Send + Sync {
    /// Overwrites the value of `key` with `val` (one transaction, one commit).
    fn put(&self, key: u32, val: &[u8]);
    /// Copies the value of `key` into `out` (`out.len()` = the value size).
    fn get(&self, key: u32, out: &mut [u8]);
    /// Writes `val` to every key as a bulk load: one transaction where the engine has them.
    fn fill(&self, val: &[u8]) {
        for k in 0..self.keys() {
            self.put(k, val);
        }
    }
    fn keys(&self) -> u32;
}

pub fn open(kind: Kind, dir: &Path, o: Opts) -> Box<dyn Store> {
    match kind {
        Kind::Mmsb | Kind::MmsbMem => Box::new(MmsbStore::open(kind == Kind::Mmsb, dir, o)),
        Kind::Redb => Box::new(RedbStore::open(dir, o)),
        Kind::Fjall => Box::new(FjallStore::open(dir, o)),
        Kind::Sqlite => Box::new(SqliteStore::open(dir, o)),
        Kind::Lmdb => Box::new(LmdbStore::open(dir, o)),
    }
}

// --- MMSB: one page per key; a put is one routed `Delta::write` of the whole value at offset 0.

pub struct MmsbStore {
    state: MMSBState,
    pages: Vec<PageId>,
}

impl MmsbStore {
    fn open(logged: bool, dir: &Path, o: Opts) -> MmsbStore {
        let config = Config {
            dir: logged.then(|| dir.join("mmsb")),
            durability: if o.durable { Durability::GroupCommit } else { Durability::None },
            log_size_cap: env_u64("PEERS_MMSB_CAP").unwrap_or(mmsb::runtime::state::DEFAULT_LOG_SIZE_CAP),
            replay_budget: env_u64("PEERS_MMSB_BUDGET").unwrap_or(mmsb::runtime::state::DEFAULT_REPLAY_BUDGET),
            ..Config::default()
        };
        let state = MMSBState::open(config).expect("mmsb open");
        let mut pages = state.page_ids().expect("page ids");
        let size = o.val.max(4096) as u64;
        while pages.len() < o.keys as usize {
            pages.push(state.create_page(size, Location::Cpu, PageMeta::default()).expect("create page"));
        }
        MmsbStore { state, pages }
    }
}

impl Store for MmsbStore {
    fn put(&self, key: u32, val: &[u8]) {
        let delta = Delta::write(0, val).expect("delta");
        self.state.route_delta(self.pages[key as usize], &delta, None).expect("route");
    }
    fn get(&self, key: u32, out: &mut [u8]) {
        self.state.read_into(self.pages[key as usize], 0, out).expect("read");
    }
    fn keys(&self) -> u32 {
        self.pages.len() as u32
    }
}

// --- redb: table u32 -> bytes; a put is one write transaction; unsynced = `Durability::None`.

const REDB_TABLE: redb::TableDefinition<u32, &[u8]> = redb::TableDefinition::new("kv");

pub struct RedbStore {
    db: redb::Database,
    o: Opts,
}

impl RedbStore {
    fn open(dir: &Path, o: Opts) -> RedbStore {
        let db = redb::Database::create(dir.join("redb.db")).expect("redb open");
        RedbStore { db, o }
    }

    fn write(&self, durable: bool, f: impl FnOnce(&mut redb::Table<u32, &[u8]>)) {
        let mut tx = self.db.begin_write().expect("redb begin");
        let d = if durable { redb::Durability::Immediate } else { redb::Durability::None };
        tx.set_durability(d).expect("redb durability");
        {
            let mut t = tx.open_table(REDB_TABLE).expect("redb table");
            f(&mut t);
        }
        tx.commit().expect("redb commit");
    }
}

impl Store for RedbStore {
    fn put(&self, key: u32, val: &[u8]) {
        self.write(self.o.durable, |t| {
            t.insert(key, val).expect("redb insert");
        });
    }
    fn get(&self, key: u32, out: &mut [u8]) {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db.begin_read().expect("redb read");
        let t = tx.open_table(REDB_TABLE).expect("redb table");
        out.copy_from_slice(t.get(key).expect("redb get").expect("key").value());
    }
    // A bulk load commits durably: redb keeps `Durability::None` commits only until the next
    // durable one, so an unsynced load would be gone after a reopen.
    fn fill(&self, val: &[u8]) {
        self.write(true, |t| {
            for k in 0..self.o.keys {
                t.insert(k, val).expect("redb insert");
            }
        });
    }
    fn keys(&self) -> u32 {
        self.o.keys
    }
}

// --- fjall: one keyspace; a put is `insert` (journal written to OS buffers); durable = then
// `persist(SyncData)`.

pub struct FjallStore {
    db: fjall::Database,
    ks: fjall::Keyspace,
    o: Opts,
}

impl FjallStore {
    fn open(dir: &Path, o: Opts) -> FjallStore {
        let db = fjall::Database::builder(dir.join("fjall")).open().expect("fjall open");
        let ks = db.keyspace("kv", fjall::KeyspaceCreateOptions::default).expect("fjall keyspace");
        FjallStore { db, ks, o }
    }
}

impl Store for FjallStore {
    fn put(&self, key: u32, val: &[u8]) {
        self.ks.insert(key.to_be_bytes(), val).expect("fjall insert");
        if self.o.durable {
            self.db.persist(fjall::PersistMode::SyncData).expect("fjall persist");
        }
    }
    fn get(&self, key: u32, out: &mut [u8]) {
        out.copy_from_slice(&self.ks.get(key.to_be_bytes()).expect("fjall get").expect("key"));
    }
    fn keys(&self) -> u32 {
        self.o.keys
    }
}

// --- SQLite (bundled) in WAL mode: table (k INTEGER PRIMARY KEY, v BLOB); a put is one
// autocommit `REPLACE`; unsynced = `synchronous=OFF`, durable = `synchronous=FULL` (in WAL mode
// NORMAL does not sync each commit). One connection behind a mutex: SQLite admits one writer at
// a time anyway.

pub struct SqliteStore {
    conn: Mutex<rusqlite::Connection>,
    o: Opts,
}

impl SqliteStore {
    fn open(dir: &Path, o: Opts) -> SqliteStore {
        let conn = rusqlite::Connection::open(dir.join("sqlite.db")).expect("sqlite open");
        let sync = if o.durable { "FULL" } else { "OFF" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync};
             CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v BLOB NOT NULL);"
        ))
        .expect("sqlite setup");
        SqliteStore { conn: Mutex::new(conn), o }
    }
}

impl Store for SqliteStore {
    fn put(&self, key: u32, val: &[u8]) {
        let c = self.conn.lock().unwrap();
        let mut st = c.prepare_cached("REPLACE INTO kv (k, v) VALUES (?1, ?2)").expect("sqlite prepare");
        st.execute(rusqlite::params![key, val]).expect("sqlite put");
    }
    fn get(&self, key: u32, out: &mut [u8]) {
        let c = self.conn.lock().unwrap();
        let mut st = c.prepare_cached("SELECT v FROM kv WHERE k = ?1").expect("sqlite prepare");
        st.query_row([key], |r| {
            out.copy_from_slice(r.get_ref(0)?.as_blob()?);
            Ok(())
        })
        .expect("sqlite get");
    }
    fn fill(&self, val: &[u8]) {
        let mut c = self.conn.lock().unwrap();
        let tx = c.transaction().expect("sqlite begin");
        {
            let mut st = tx.prepare_cached("REPLACE INTO kv (k, v) VALUES (?1, ?2)").expect("sqlite prepare");
            for k in 0..self.o.keys {
                st.execute(rusqlite::params![k, val]).expect("sqlite put");
            }
        }
        tx.commit().expect("sqlite commit");
    }
    fn keys(&self) -> u32 {
        self.o.keys
    }
}

// --- LMDB (heed): one database, big-endian u32 keys; a put is one write transaction; unsynced =
// `NO_SYNC` (written to the file, no fsync: survives a process crash, like MMSB's `None`).

type LmdbDb = heed::Database<'static, heed::types::Bytes, heed::types::Bytes>;

pub struct LmdbStore {
    env: Option<Box<heed::Env>>,
    db: LmdbDb,
    o: Opts,
}

impl LmdbStore {
    fn open(dir: &Path, o: Opts) -> LmdbStore {
        let path = dir.join("lmdb");
        std::fs::create_dir_all(&path).expect("lmdb dir");
        let mut opts = heed::EnvOpenOptions::new();
        opts.map_size(8 << 30).max_dbs(1);
        if !o.durable {
            // SAFETY: NO_SYNC only drops the fsync of each commit (what this workload asks for);
            // the file stays consistent after a process crash.
            unsafe {
                opts.flags(heed::EnvFlags::NO_SYNC);
            }
        }
        // SAFETY: this process opens the directory once at a time (closed in Drop before any reopen)
        // and no other process touches it.
        let env = Box::new(unsafe { opts.open(&path) }.expect("lmdb open"));
        // SAFETY: heed ties a `Database` to the borrow of its `Env`; the handle is plain data (a
        // DBI number) and this struct drops the boxed env (which never moves) only in Drop, after
        // which the handle is never used.
        let env_ref: &'static heed::Env = unsafe { &*(&*env as *const heed::Env) };
        let tx = env_ref.write_txn().expect("lmdb txn");
        let db: LmdbDb = env_ref
            .create_databases_and_commit(tx, |dbo, tx| {
                dbo.create_database(tx, Some("kv")).map(heed::CommitOrAbort::<_, ()>::Commit)
            })
            .expect("lmdb db")
            .unwrap_commit();
        LmdbStore { env: Some(env), db, o }
    }

    fn env(&self) -> &heed::Env {
        self.env.as_ref().expect("open")
    }
}

impl Store for LmdbStore {
    fn put(&self, key: u32, val: &[u8]) {
        let mut tx = self.env().write_txn().expect("lmdb txn");
        self.db.put(&mut tx, &key.to_be_bytes(), val).expect("lmdb put");
        tx.commit().expect("lmdb commit");
    }
    fn get(&self, key: u32, out: &mut [u8]) {
        let tx = self.env().read_txn().expect("lmdb read");
        out.copy_from_slice(self.db.get(&tx, &key.to_be_bytes()).expect("lmdb get").expect("key"));
    }
    fn fill(&self, val: &[u8]) {
        let mut tx = self.env().write_txn().expect("lmdb txn");
        for k in 0..self.o.keys {
            self.db.put(&mut tx, &k.to_be_bytes(), val).expect("lmdb put");
        }
        tx.commit().expect("lmdb commit");
    }
    fn keys(&self) -> u32 {
        self.o.keys
    }
}

impl Drop for LmdbStore {
    // heed keeps one environment per path per process: wait until it is really closed, so the
    // reopen workloads can open it again.
    fn drop(&mut self) {
        if let Some(env) = self.env.take() {
            (*env).prepare_for_closing().wait();
        }
    }
}

/// A byte count from the environment (`PEERS_MMSB_CAP`, `PEERS_MMSB_BUDGET`), if set and valid.
fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}
