//! `mmsb`: inspect and verify an MMSB state directory without its writer.
//!
//! Every command is read-only: it takes no lock, opens files read-only, creates and changes
//! nothing, and works while a writer (in any process) keeps writing: the record being appended
//! ends what is read. Exit status: 0 success (for `verify`: sound), 1 damage found (`verify`, or
//! a record of `dump`/`pages` that does not decode), 2 usage or I/O errors. Errors are one line
//! on stderr, naming the file and byte offset where there is one.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mmsb::runtime::tlog::inspect::{read_dir, DirInfo, RecordInfo};
use mmsb::runtime::tlog::record::{CreateBody, Record};
use mmsb::types::error::LogError;
use mmsb::{Delta, Location, Lsn, MMSBState};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(name = "mmsb", version, about = "Inspect and verify an MMSB state directory (read-only, no lock taken)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// LSN range, segments with their LSNs and sizes, checkpoints, the replayable range,
    /// compacted runs, sizes, and what an open replays (records and bytes after the newest
    /// valid checkpoint).
    Info {
        /// The state directory.
        dir: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also time the recovery: rebuild the newest state read-only in memory (load the newest
        /// checkpoint, replay the log after it) and print how long it took. Reads every page.
        #[arg(long)]
        time_recovery: bool,
    },
    /// Checks every checkpoint, every record (checksum, LSN order, decoding) and the segment
    /// chain as an open would, changing nothing. Exit 0 when sound, 1 when damaged (one line
    /// per problem, with the file and byte offset), 2 on usage or I/O errors.
    Verify {
        /// The state directory.
        dir: PathBuf,
    },
    /// The log's records, one line per page creation, page free, delta (a batch gives one line
    /// per delta), compacted run and extension record.
    Dump {
        /// The state directory.
        dir: PathBuf,
        /// First LSN shown.
        #[arg(long)]
        from: Option<Lsn>,
        /// Last LSN shown.
        #[arg(long)]
        to: Option<Lsn>,
        /// JSON lines (the written bytes in hex) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The pages right after an LSN: ids, names, tags, sizes, epochs, CRC32C of the bytes.
    Pages {
        /// The state directory.
        dir: PathBuf,
        /// The LSN (default: the newest the directory holds).
        #[arg(long)]
        at: Option<Lsn>,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The live state of a directory whose writer uses file-backed pages, read through its
    /// shared header and page table (no log read, no lock): writer status and pid, generation,
    /// applied and acknowledged LSNs, pages and their bytes, waiting readers.
    Stats {
        /// The state directory.
        dir: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Why a command failed: damage (exit 1) or anything else (exit 2), as one line; or the reader
/// of the output went away (`mmsb dump DIR | head`: not an error).
enum Fail {
    Damage(String),
    Other(String),
    ClosedOutput,
}

impl From<mmsb::Error> for Fail {
    fn from(e: mmsb::Error) -> Fail {
        let line = e.to_string().replace('\n', " ");
        match e {
            mmsb::Error::Log(LogError::Corrupt { .. }) => Fail::Damage(line),
            _ => Fail::Other(line),
        }
    }
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        if e.kind() == io::ErrorKind::BrokenPipe {
            return Fail::ClosedOutput;
        }
        Fail::Other(format!("writing the output failed: {e}"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let r = match cli.cmd {
        Cmd::Info { dir, json, time_recovery } => info(&mut out, &dir, json, time_recovery),
        Cmd::Verify { dir } => verify(&mut out, &dir),
        Cmd::Dump { dir, from, to, json } => dump(&mut out, &dir, from, to, json),
        Cmd::Pages { dir, at, json } => pages(&mut out, &dir, at, json),
        Cmd::Stats { dir, json } => stats(&mut out, &dir, json),
    };
    let r = r.and_then(|code| out.flush().map(|()| code).map_err(Fail::from));
    match r {
        Ok(code) => code,
        Err(Fail::ClosedOutput) => ExitCode::SUCCESS,
        Err(Fail::Damage(m)) => {
            eprintln!("mmsb: damaged: {m}");
            ExitCode::from(1)
        }
        Err(Fail::Other(m)) => {
            eprintln!("mmsb: error: {m}");
            ExitCode::from(2)
        }
    }
}

type Out<'a> = BufWriter<io::StdoutLock<'a>>;

fn range_text(r: &Option<std::ops::RangeInclusive<Lsn>>) -> String {
    r.as_ref().map_or_else(|| "none".to_string(), |r| format!("{}..={}", r.start(), r.end()))
}

/// Microseconds to rebuild the newest state of `dir` read-only (`MMSBState::open_at`): what an
/// open's recovery does, less the page files' mapping and the log's set-up.
fn time_recovery(dir: &std::path::Path, lsn: Lsn) -> Result<u64, Fail> {
    let t = std::time::Instant::now();
    let s = MMSBState::open_at(dir, lsn)?;
    let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
    drop(s);
    Ok(us)
}

fn info(out: &mut Out, dir: &std::path::Path, json: bool, timed: bool) -> Result<ExitCode, Fail> {
    let i = read_dir(dir, |d| d.info())?;
    let recovery_us = if timed && i.replayable.is_some() { Some(time_recovery(dir, i.last_lsn)?) } else { None };
    if json {
        let mut v = info_json(&i);
        v["recovery_micros"] = json!(recovery_us);
        writeln!(out, "{v}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let runs: Vec<String> = i.compacted_runs.iter().map(|r| format!("{}..={}", r.start(), r.end())).collect();
    writeln!(out, "directory    {}", i.dir.display())?;
    if i.last_lsn > i.chain_base {
        writeln!(
            out,
            "lsns         {}..={} (the log starts after LSN {})",
            i.chain_base + 1,
            i.last_lsn,
            i.chain_base
        )?;
    } else {
        writeln!(out, "lsns         none after LSN {}", i.chain_base)?;
    }
    writeln!(
        out,
        "replayable   {}{}",
        range_text(&i.replayable),
        if runs.is_empty() { "" } else { ", less the inside of the compacted runs" }
    )?;
    writeln!(out, "compacted    {}", if runs.is_empty() { "none".to_string() } else { runs.join(", ") })?;
    writeln!(out, "log          {} segments, {} bytes", i.segments.len(), i.log_bytes)?;
    writeln!(out, "checkpoints  {}, {} bytes", i.checkpoints.len(), i.checkpoint_bytes)?;
    let r = &i.replay;
    let from = if r.checkpoint_lsn == 0 {
        "the log's start (no valid checkpoint)".to_string()
    } else {
        format!("the checkpoint at LSN {}", r.checkpoint_lsn)
    };
    writeln!(out, "replay       {} records, {} bytes after {from} (what an open replays)", r.records, r.bytes)?;
    if let Some(us) = recovery_us {
        writeln!(out, "recovery     {:.3} ms (read-only rebuild: newest checkpoint + replay)", us as f64 / 1e3)?;
    }
    if let Some(e) = &i.end {
        let what = if e.zeros { "zero fill from" } else { "readable log ends at" };
        writeln!(out, "end          {what} {} byte {} ({})", e.file, e.offset, e.reason)?;
    }
    writeln!(out, "segments:")?;
    for s in &i.segments {
        let lsns = range_text(&s.lsns);
        let base = s.base_lsn.map_or_else(|| "header does not verify".to_string(), |b| format!("base {b}"));
        let start = if s.chain_start { "  chain start" } else { "" };
        let unread = if s.read { "" } else { "  (not read: after the end of the readable log)" };
        writeln!(
            out,
            "  {}  {base}  LSNs {lsns}  {} records  {} bytes ({} valid)  blob {} bytes{start}{unread}",
            s.name, s.records, s.bytes, s.valid_bytes, s.blob_bytes
        )?;
    }
    writeln!(out, "checkpoints:")?;
    for c in &i.checkpoints {
        let state = match (&c.problem, c.pages) {
            (Some(p), _) => format!("BAD: {p}"),
            (None, Some(n)) => format!("{n} pages, ok"),
            (None, None) => "ok".to_string(),
        };
        writeln!(out, "  {}  LSN {}  {} bytes  {state}", c.name, c.lsn, c.bytes)?;
    }
    for f in &i.stray_files {
        writeln!(out, "stray        {f} (not part of the chain; the next open removes or quarantines it)")?;
    }
    for f in &i.quarantined {
        writeln!(out, "quarantined  quarantine/{f}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn info_json(i: &DirInfo) -> Value {
    let range = |r: &Option<std::ops::RangeInclusive<Lsn>>| r.as_ref().map(|r| json!([r.start(), r.end()]));
    json!({
        "dir": i.dir.display().to_string(),
        "chain_base": i.chain_base,
        "last_lsn": i.last_lsn,
        "replayable": range(&i.replayable),
        "compacted_runs": i.compacted_runs.iter().map(|r| json!([r.start(), r.end()])).collect::<Vec<_>>(),
        "log_bytes": i.log_bytes,
        "checkpoint_bytes": i.checkpoint_bytes,
        "end": i.end.as_ref().map(|e| json!({"file": e.file, "offset": e.offset, "reason": e.reason, "zeros": e.zeros})),
        "segments": i.segments.iter().map(|s| json!({
            "name": s.name, "segno": s.segno, "chain_start": s.chain_start, "base_lsn": s.base_lsn,
            "lsns": range(&s.lsns), "records": s.records, "bytes": s.bytes, "valid_bytes": s.valid_bytes,
            "blob_bytes": s.blob_bytes, "read": s.read,
        })).collect::<Vec<_>>(),
        "checkpoints": i.checkpoints.iter().map(|c| json!({
            "name": c.name, "lsn": c.lsn, "bytes": c.bytes, "pages": c.pages, "problem": c.problem,
        })).collect::<Vec<_>>(),
        "stray_files": i.stray_files,
        "quarantined": i.quarantined,
        "replay": json!({
            "checkpoint_lsn": i.replay.checkpoint_lsn, "records": i.replay.records, "bytes": i.replay.bytes,
        }),
    })
}

fn verify(out: &mut Out, dir: &std::path::Path) -> Result<ExitCode, Fail> {
    let mut v = read_dir(dir, |d| d.verify())?;
    // A running writer can change a file between two reads of one pass (a segment created or
    // removed): such a race does not repeat, damage does. Report what a later pass still finds.
    for _ in 0..2 {
        if v.problems.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        v = read_dir(dir, |d| d.verify())?;
    }
    for n in &v.notes {
        writeln!(out, "note: {n}")?;
    }
    if v.problems.is_empty() {
        writeln!(out, "ok: {}: {} records, the log recovers to LSN {}", dir.display(), v.records, v.last_lsn)?;
        return Ok(ExitCode::SUCCESS);
    }
    out.flush()?;
    for p in &v.problems {
        eprintln!("mmsb: damaged: {p}");
    }
    Ok(ExitCode::from(1))
}

fn location(l: Location) -> &'static str {
    match l {
        Location::Cpu => "cpu",
        Location::Gpu => "gpu",
        Location::Unified => "unified",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn runs_json(d: &Delta) -> Vec<Value> {
    let mut runs = Vec::new();
    d.for_each_run(|offset, bytes| runs.push(json!({"offset": offset, "len": bytes.len(), "hex": hex(bytes)})));
    runs
}

fn delta_text(d: &Delta) -> String {
    let mut runs = Vec::new();
    d.for_each_run(|offset, bytes| runs.push(format!("{offset}+{}", bytes.len())));
    let shown = runs.len().min(4);
    let more = if runs.len() > shown { format!(", ... ({} runs)", runs.len()) } else { String::new() };
    let enc = if d.is_dense() { "dense" } else { "sparse" };
    format!("{} bytes, {enc}, at {}{more}", d.written_bytes(), runs[..shown].join(", "))
}

fn create_json(c: &CreateBody) -> Value {
    json!({"page": c.id.0, "size": c.size, "location": location(c.location), "name": c.meta.name, "tags": c.meta.tags})
}

fn create_text(c: &CreateBody) -> String {
    let tags: Vec<String> = c.meta.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "page {}  size {}  {}  name {:?}  tags [{}]",
        c.id.0,
        c.size,
        location(c.location),
        c.meta.name,
        tags.join(", ")
    )
}

fn ext_name(kind: u8) -> &'static str {
    use mmsb::runtime::tlog::ext_kind;
    match kind {
        ext_kind::GRAPH_EDGE_ADD => "graph edge added",
        ext_kind::GRAPH_EDGE_REMOVE => "graph edge removed",
        ext_kind::DEVICE_SYNC => "device sync",
        ext_kind::GRAPH_RESTORE => "graph restored",
        _ => "unknown",
    }
}

/// The lines of one record (a batch gives one per delta in `lsns`).
fn record_lines(
    r: &RecordInfo,
    rec: Record,
    lsns: &std::ops::RangeInclusive<Lsn>,
    json: bool,
    lines: &mut Vec<String>,
) {
    let at = format!("{}:{}", r.file, r.offset);
    let mut line = |lsn: Lsn, text: String, v: Value| {
        if json {
            let mut v = v;
            v["lsn"] = json!(lsn);
            v["file"] = json!(r.file);
            v["record_offset"] = json!(r.offset);
            v["record_bytes"] = json!(r.bytes);
            v["blob"] = json!(r.blob);
            lines.push(v.to_string());
        } else {
            lines.push(format!("{lsn:>10}  {text}  @{at}"));
        }
    };
    match rec {
        Record::PageCreate(c) => {
            let mut v = create_json(&c);
            v["kind"] = json!("create");
            line(r.lsn, format!("create     {}", create_text(&c)), v)
        }
        Record::PageFree(id) => line(r.lsn, format!("free       page {}", id.0), json!({"kind": "free", "page": id.0})),
        Record::Batch(ops) => {
            for (k, (page, d)) in ops.iter().enumerate() {
                let lsn = r.lsn + k as u64;
                if !lsns.contains(&lsn) {
                    continue;
                }
                let v = json!({
                    "kind": "delta", "page": page.0, "encoding": if d.is_dense() { "dense" } else { "sparse" },
                    "bytes": d.written_bytes(), "runs": runs_json(d),
                });
                line(lsn, format!("delta      page {}  {}", page.0, delta_text(d)), v);
            }
        }
        Record::Compacted(c) => {
            let epochs: u64 = c.deltas.iter().map(|d| d.1).sum();
            let text = format!(
                "compacted  LSNs {}..={}: {} creates, {} frees, {} pages changed by {epochs} deltas, next page id {}",
                r.lsn,
                r.last_lsn,
                c.creates.len(),
                c.frees.len(),
                c.deltas.len(),
                c.next_page_id
            );
            let v = json!({
                "kind": "compacted", "first_lsn": r.lsn, "next_page_id": c.next_page_id,
                "frees": c.frees.iter().map(|p| p.0).collect::<Vec<_>>(),
                "creates": c.creates.iter().map(create_json).collect::<Vec<_>>(),
                "deltas": c.deltas.iter().map(|(p, n, d)| json!({
                    "page": p.0, "epochs": n, "bytes": d.written_bytes(), "runs": runs_json(d),
                })).collect::<Vec<_>>(),
            });
            line(r.last_lsn, text, v)
        }
        Record::Extension { kind, body } => {
            let text = format!("extension  kind {kind} ({})  {} bytes", ext_name(kind), body.len());
            line(r.lsn, text, json!({"kind": "extension", "ext_kind": kind, "bytes": body.len(), "hex": hex(&body)}))
        }
    }
}

fn dump(
    out: &mut Out,
    dir: &std::path::Path,
    from: Option<Lsn>,
    to: Option<Lsn>,
    json: bool,
) -> Result<ExitCode, Fail> {
    let lsns = from.unwrap_or(0)..=to.unwrap_or(Lsn::MAX);
    // Collected first: a retry after a file vanished under the reader starts the output over.
    let lines = read_dir(dir, |d| {
        let mut lines = Vec::new();
        d.records(lsns.clone(), |r, rec| {
            record_lines(r, rec, &lsns, json, &mut lines);
            Ok(())
        })?;
        Ok(lines)
    })?;
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn pages(out: &mut Out, dir: &std::path::Path, at: Option<Lsn>, json: bool) -> Result<ExitCode, Fail> {
    let (lsn, state) = read_dir(dir, |d| {
        let lsn = at.unwrap_or_else(|| d.last_lsn());
        Ok((lsn, d.replay_to(lsn)?))
    })?;
    let rows = page_rows(&state)?;
    if !json {
        writeln!(out, "LSN {lsn}: {} pages", rows.len())?;
        writeln!(
            out,
            "{:>8}  {:>12}  {:>8}  {:<8}  {:<10}  name, tags",
            "page", "size", "epoch", "location", "crc32c"
        )?;
    }
    for (info, meta, crc) in rows {
        if json {
            let v = json!({
                "lsn": lsn, "page": info.id.0, "name": meta.name, "tags": meta.tags, "size": info.size,
                "epoch": info.epoch, "location": location(info.location), "crc32c": crc,
            });
            writeln!(out, "{v}")?;
        } else {
            let tags: Vec<String> = meta.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(
                out,
                "{:>8}  {:>12}  {:>8}  {:<8}  {:08x}    {:?} [{}]",
                info.id.0,
                info.size,
                info.epoch,
                location(info.location),
                crc,
                meta.name,
                tags.join(", ")
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

type PageRow = (mmsb::PageInfo, mmsb::PageMeta, u32);

fn page_rows(s: &MMSBState) -> Result<Vec<PageRow>, Fail> {
    let mut ids = s.page_ids()?;
    ids.sort();
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let crc = s.with_page(id, crc32c::crc32c)?;
        rows.push((s.page_info(id)?, s.page_meta(id)?, crc));
    }
    Ok(rows)
}

/// `mmsb stats`: what a reader process sees of a running (or closed, or crashed) writer.
fn stats(out: &mut impl Write, dir: &std::path::Path, json: bool) -> Result<ExitCode, Fail> {
    use mmsb::runtime::reader::{Reader, WriterStatus};
    let reader = Reader::open(dir)?;
    let (status, pid) = match reader.writer() {
        WriterStatus::Running(pid) => ("running", Some(pid)),
        WriterStatus::Recovering(pid) => ("recovering", Some(pid)),
        WriterStatus::Closed => ("closed", None),
        WriterStatus::Crashed(pid) => ("crashed", Some(pid)),
    };
    let ids = reader.page_ids()?;
    let mut bytes = 0u64;
    for id in &ids {
        // A page freed between the listing and this call is simply not counted.
        if let Ok(size) = reader.page_size(*id) {
            bytes += size;
        }
    }
    let (lsn, durable) = (reader.lsn(), reader.durable_lsn());
    if json {
        let v = json!({
            "dir": dir.display().to_string(),
            "writer": status,
            "pid": pid,
            "generation": reader.generation(),
            "lsn": lsn,
            "durable_lsn": durable,
            "pages": ids.len(),
            "page_bytes": bytes,
        });
        writeln!(out, "{v}")?;
    } else {
        let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        writeln!(out, "{}", dir.display())?;
        writeln!(out, "  writer        {status}{pid}")?;
        writeln!(out, "  generation    {}", reader.generation())?;
        writeln!(out, "  lsn           {lsn}")?;
        writeln!(out, "  durable lsn   {durable} ({} not yet acknowledged)", lsn.saturating_sub(durable))?;
        writeln!(out, "  pages         {} ({bytes} bytes)", ids.len())?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::ext_name;
    use mmsb::runtime::tlog::ext_kind;

    #[test]
    fn every_extension_kind_has_a_name() {
        let kinds =
            [ext_kind::GRAPH_EDGE_ADD, ext_kind::GRAPH_EDGE_REMOVE, ext_kind::DEVICE_SYNC, ext_kind::GRAPH_RESTORE];
        for k in kinds {
            assert_ne!(ext_name(k), "unknown", "extension kind {k}");
        }
        assert_eq!(ext_name(0), "unknown");
        assert_eq!(ext_name(u8::MAX), "unknown");
    }
}
