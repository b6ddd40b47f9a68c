//! The rooms of ARCHITECTURE.md, checked: every `crate::ROOM` path in `src/**/*.rs` is an edge
//! of the room graph, which must have no cycle, and the pure rooms must not reach the I/O rooms.
//!
//! A room is a top-level module of `src/` (`src/rollout/…` is `rollout`, `src/config.rs` is
//! `config`); `lib.rs` and `main.rs` are the root and may name every room. Reading is textual on
//! purpose (no parser dependency for a test): line comments are dropped (doc links are not
//! imports), and `#[cfg(test)] mod NAME { … }` blocks are skipped by counting braces, because a
//! unit test may build its fixture from any room without shaping the design. `super::` paths
//! never leave a room here (no room nests a `super::super` out of itself), so only `crate::`
//! paths are read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Rooms that must stay pure: data in, data out, `now` as an argument.
const PURE: &[&str] = &["rollout", "judge", "verdict"];

/// Rooms that do I/O (network, disk, processes, the clock, the log): a pure room imports none.
const IO: &[&str] = &[
    "source",
    "store",
    "controller",
    "actions",
    "api",
    "web",
    "traffic",
    "cli",
    "demo",
    "telemetry",
    "config",
];

/// room -> room it imports -> files that make the edge.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The rooms: what `lib.rs` declares with `pub mod` / `mod`.
fn rooms(src: &Path) -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("reading src/lib.rs");
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').trim().to_string())
        })
        .collect()
}

/// The file's room, or `None` for the crate root.
fn room_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("file under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    if rel.components().count() == 1 {
        let name = first.strip_suffix(".rs")?;
        return (!matches!(name, "lib" | "main")).then(|| name.to_string());
    }
    Some(first)
}

/// The text that counts: line comments removed, `#[cfg(test)] mod … { … }` blocks removed.
fn code_lines(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed == "#[cfg(test)]" {
            // Attributes may follow; the block starts at the `mod` line.
            while lines
                .peek()
                .is_some_and(|l| l.trim().starts_with("#[") || l.trim().starts_with("//"))
            {
                lines.next();
            }
            if let Some(next) = lines.peek()
                && is_inline_mod(next.trim())
            {
                let mut depth = 0i64;
                for l in lines.by_ref() {
                    depth += braces(l);
                    if depth <= 0 && l.contains('}') {
                        break;
                    }
                }
            }
            continue;
        }
        // A `//` inside a string ("http://…") starts no comment: cut at the first `//` with
        // an even number of quotes before it.
        let cut = line
            .match_indices("//")
            .map(|(i, _)| i)
            .find(|&i| line[..i].matches('"').count() % 2 == 0);
        let code = cut.map_or(line, |i| &line[..i]);
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn is_inline_mod(l: &str) -> bool {
    (l.starts_with("mod ") || l.starts_with("pub mod ")) && l.ends_with('{')
}

fn braces(l: &str) -> i64 {
    l.chars()
        .map(|c| match c {
            '{' => 1,
            '}' => -1,
            _ => 0,
        })
        .sum()
}

/// Every room named after `crate::`, including each head of a `crate::{a::x, b}` group.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `canaryd_crate::` or `my_crate::` are not this crate.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            let mut heads = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => heads.push(std::mem::take(&mut item)),
                    _ => item.push(c),
                }
            }
            heads.push(item);
            for h in heads {
                found.insert(ident(h.trim()));
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|s| !s.is_empty());
    found
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn graph() -> (BTreeSet<String>, Graph) {
    let src = src_dir();
    let rooms = rooms(&src);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g = Graph::new();
    for file in files {
        let Some(from) = room_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        for to in crate_paths(&code_lines(&text)) {
            if to != from && rooms.contains(&to) {
                let rel = file.strip_prefix(&src).expect("under src").display();
                g.entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(format!("src/{rel}"));
            }
        }
    }
    (rooms, g)
}

/// One cycle, as the rooms along it (first repeated at the end), if the graph has any.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        g: &Graph,
        at: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(at.to_string(), Mark::Open);
        path.push(at.to_string());
        for next in g.get(at).into_iter().flat_map(|m| m.keys()) {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let start = path
                        .iter()
                        .position(|r| r == next)
                        .expect("open is on path");
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(c) = visit(g, next, marks, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        marks.insert(at.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for room in g.keys() {
        if !marks.contains_key(room.as_str())
            && let Some(c) = visit(g, room, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

fn describe(g: &Graph, cycle: &[String]) -> String {
    let mut s = cycle.join(" -> ");
    for pair in cycle.windows(2) {
        let files = &g[&pair[0]][&pair[1]];
        let files: Vec<_> = files.iter().map(String::as_str).collect();
        s.push_str(&format!(
            "\n  {} -> {}: {}",
            pair[0],
            pair[1],
            files.join(", ")
        ));
    }
    s
}

#[test]
fn the_rooms_import_each_other_without_a_cycle() {
    let (_, g) = graph();
    // Report every cycle, not just the first: cut one edge of each and search again.
    let mut g2 = g.clone();
    let mut cycles = Vec::new();
    while let Some(c) = find_cycle(&g2) {
        cycles.push(describe(&g, &c));
        let (a, b) = (&c[c.len() - 2], &c[c.len() - 1]);
        g2.get_mut(a).expect("edge source").remove(b);
    }
    assert!(
        cycles.is_empty(),
        "import cycles between rooms:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_pure_rooms_import_no_io_room() {
    let (rooms, g) = graph();
    let mut wrong = Vec::new();
    for pure in PURE {
        // A pure room that does not exist would make this test pass vacuously.
        if !rooms.contains(*pure) {
            wrong.push(format!("src/lib.rs declares no room {pure}"));
        }
        for (to, files) in g.get(*pure).into_iter().flatten() {
            if IO.contains(&to.as_str()) {
                let files: Vec<_> = files.iter().map(String::as_str).collect();
                wrong.push(format!("{pure} -> {to}: {}", files.join(", ")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "pure rooms import I/O rooms:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_reader_sees_grouped_paths_and_skips_comments_and_unit_tests() {
    let code = "use crate::{judge::Check, rules::{Rule, schema}};\n\
                // use crate::web::x;\n\
                let u = \"http://x\"; // crate::api\n\
                #[cfg(test)]\nmod tests {\n    use crate::cli::x;\n    fn f() { }\n}\n\
                fn g() -> crate::store::Store { crate::verdict::Verdict::Pass }\n";
    let found = crate_paths(&code_lines(code));
    let want: BTreeSet<String> = ["judge", "rules", "store", "verdict"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, want);
}

#[test]
fn a_cycle_is_found_and_named() {
    let mut g = Graph::new();
    let edge = |g: &mut Graph, a: &str, b: &str| {
        g.entry(a.into())
            .or_default()
            .entry(b.into())
            .or_default()
            .insert(format!("src/{a}.rs"));
    };
    edge(&mut g, "a", "b");
    edge(&mut g, "b", "c");
    assert_eq!(find_cycle(&g), None);
    edge(&mut g, "c", "a");
    let c = find_cycle(&g).expect("a -> b -> c -> a");
    assert_eq!(c, ["a", "b", "c", "a"]);
    assert!(describe(&g, &c).contains("c -> a: src/c.rs"));
}
