//! The import check of `docs/architecture.md` ("Which module may import which"): every
//! `crate::<module>` path in `src/**/*.rs` must follow a direction the table there allows. The
//! table is read from the document, so the two cannot disagree.
//!
//! `cargo test -p mmsb --test layers -- --nocapture` also prints the import circles between
//! files (strongly connected components of the file graph), the figure issue 16 tracks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const TABLE_START: &str = "<!-- layers:begin -->";
const TABLE_END: &str = "<!-- layers:end -->";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `module -> modules it may import` (`None`: every module), from the table between the
/// markers. A row reads ``| `graph` | `types`, `runtime` |``; "every module" allows all.
fn allowed_table() -> BTreeMap<String, Option<BTreeSet<String>>> {
    let doc_path = root().join("../../docs/architecture.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap_or_else(|e| panic!("{}: {e}", doc_path.display()));
    let start = doc.find(TABLE_START).expect("docs/architecture.md has the layers table markers");
    let end = doc[start..].find(TABLE_END).expect("the layers table has its end marker") + start;
    let mut table = BTreeMap::new();
    for line in doc[start..end].lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 2 || !cells[0].starts_with('`') {
            continue; // header, separator, prose
        }
        let module = cells[0].trim_matches('`').to_string();
        let allowed = if cells[1].contains("every module") { None } else { Some(ticked(cells[1])) };
        table.insert(module, allowed);
    }
    assert!(table.len() >= 5, "the layers table lists too few modules: {table:?}");
    table
}

/// The backticked words of a table cell.
fn ticked(cell: &str) -> BTreeSet<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// Every `crate::a::b::c` path of a file's code (comments left out), as segment lists. A group
/// `crate::{a::b, c}` gives one path per item.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            // Not part of a longer identifier (`$crate::` is this crate too).
            let before = rest[..i].chars().last();
            rest = &rest[i + "crate::".len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let close = group.find('}').unwrap_or(group.len());
                for item in group[..close].split(',') {
                    let segs = path_segments(item.trim());
                    if !segs.is_empty() {
                        out.push(segs);
                    }
                }
            } else {
                out.push(path_segments(rest));
            }
        }
    }
    out
}

fn path_segments(mut s: &str) -> Vec<String> {
    let mut segs = Vec::new();
    loop {
        let id = ident(s);
        if id.is_empty() {
            break;
        }
        segs.push(id.to_string());
        s = &s[id.len()..];
        match s.strip_prefix("::") {
            Some(r) => s = r,
            None => break,
        }
    }
    segs
}

/// The file a path lands in: the longest prefix of its segments that names a module file.
fn resolve(src: &Path, segs: &[String]) -> PathBuf {
    for n in (1..=segs.len()).rev() {
        let rel: PathBuf = segs[..n].iter().collect();
        for cand in [src.join(&rel).with_extension("rs"), src.join(&rel).join("mod.rs")] {
            if cand.is_file() {
                return cand;
            }
        }
    }
    src.join("lib.rs")
}

/// The top-level module of a file (`lib` for the crate root).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// Strongly connected components with more than one file (Tarjan), each sorted.
fn circles(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct T<'a> {
        g: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on: BTreeSet<&'a PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a PathBuf) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let Some((w, _)) = t.g.get_key_value(w) else { continue };
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn imports_follow_the_layers_table() {
    let table = allowed_table();
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = BTreeSet::new();
    let mut file_graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    let mut module_edges: BTreeSet<(String, String)> = BTreeSet::new();
    for file in &files {
        let from = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let edges = file_graph.entry(file.clone()).or_default();
        for segs in crate_paths(&text) {
            let target = resolve(&src, &segs);
            if &target != file {
                edges.insert(target);
            }
            let to = segs[0].clone();
            if to == from || !table.contains_key(&to) {
                continue; // within the module, or a crate-root re-export (`crate::Config`)
            }
            module_edges.insert((from.clone(), to.clone()));
            let allowed = table.get(&from).unwrap_or_else(|| {
                panic!("{}: module `{from}` is not in the layers table of docs/architecture.md", file.display())
            });
            if allowed.as_ref().is_some_and(|a| !a.contains(&to)) {
                let rel = file.strip_prefix(&src).unwrap().display().to_string();
                violations.insert(format!("{rel}: `{from}` imports `{to}` (crate::{})", segs.join("::")));
            }
        }
    }
    let found = circles(&file_graph);
    let pairs: Vec<_> = module_edges.iter().filter(|(a, b)| module_edges.contains(&(b.clone(), a.clone()))).collect();
    eprintln!("module edges: {module_edges:?}");
    eprintln!("modules importing each other: {}", pairs.len() / 2);
    eprintln!("file-level import circles (strongly connected components): {}", found.len());
    for c in &found {
        let names: Vec<_> = c.iter().map(|p| p.strip_prefix(&src).unwrap().display().to_string()).collect();
        eprintln!("  {} files: {}", names.len(), names.join(", "));
    }
    assert!(
        violations.is_empty(),
        "imports against the layers table of docs/architecture.md:\n{}",
        violations.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_path_scanner_sees_groups_and_skips_comments() {
    let text = "use crate::{types::page::PageId, runtime::state};\n// crate::graph::x\nlet a = $crate::device::y; // crate::ffi\nfoo_crate::monitoring::z";
    let paths = crate_paths(text);
    let firsts: Vec<&str> = paths.iter().map(|p| p[0].as_str()).collect();
    assert_eq!(firsts, ["types", "runtime", "device"]);
    assert_eq!(paths[0], ["types", "page", "PageId"]);
}
