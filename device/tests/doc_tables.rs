//! The layout tables of `docs/protocol.md` are the code's tables: every layout
//! declared with `wire!` (`device::layout::TABLES`) has a table in the document,
//! with the same fields in the same order at the same offsets and sizes, and the
//! same total size; the document has no layout table the code does not know.
//!
//! The two table shapes the test reads are described at [`doc_tables`]; offsets
//! and sizes are decimal or `0x` hex, field names may be in backticks, further
//! columns are free text. Implicit C padding is not listed.

use device::layout::{TABLES, Table};

const DOC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"));

#[derive(Debug, PartialEq, Eq)]
struct DocTable {
    name: String,
    size: usize,
    /// (name, offset, size)
    fields: Vec<(String, usize, usize)>,
    line: usize,
}

/// The cells of a table row, trimmed (backticks kept).
fn cells(line: &str) -> Vec<&str> {
    let t = line.trim();
    let t = t.strip_prefix('|').unwrap_or(t);
    let t = t.strip_suffix('|').unwrap_or(t);
    t.split('|').map(str::trim).collect()
}

fn number(s: &str) -> Option<usize> {
    let s = s.trim_matches('`');
    match s.strip_prefix("0x") {
        Some(h) => usize::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `` `name` (N B) `` → (name, N)
fn layout_header(cell: &str) -> Option<(String, usize)> {
    let rest = cell.strip_prefix('`')?;
    let (name, rest) = rest.split_once('`')?;
    let size = rest.trim().strip_prefix('(')?.strip_suffix("B)")?.trim();
    Some((name.to_string(), number(size)?))
}

fn field_name(cell: &str) -> String {
    cell.trim_matches('`').to_ascii_lowercase()
}

/// Is this cell "no such field in this layout"?
fn absent(cell: &str) -> bool {
    matches!(cell, "" | "-" | "–" | "—")
}

/// Two table shapes:
/// * one layout: `` | `name` (N B) | offset | size | notes... | ``, rows
///   `| field | offset | size | ... |`;
/// * several layouts sharing field names and sizes: `` | field | size | `a` (N B) |
///   `b` (M B) | ... | ``, rows `| field | size | offset in a | offset in b | ... |`
///   with `-` where a layout lacks the field.
fn doc_tables(doc: &str) -> Result<Vec<DocTable>, String> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        let c = cells(l);
        let single = l.starts_with('|')
            && c.len() >= 3
            && c[0].starts_with('`')
            && c[1] == "offset"
            && c[2] == "size";
        let multi = l.starts_with('|')
            && c.len() >= 3
            && c[0] == "field"
            && c[1] == "size"
            && c[2..].iter().all(|h| h.starts_with('`'));
        if !single && !multi {
            i += 1;
            continue;
        }
        let bad_header = || format!("line {}: bad layout table header {l:?}", i + 1);
        let heads: Vec<(String, usize)> = if single {
            vec![layout_header(c[0]).ok_or_else(bad_header)?]
        } else {
            c[2..]
                .iter()
                .map(|h| layout_header(h).ok_or_else(bad_header))
                .collect::<Result<_, _>>()?
        };
        let first = out.len();
        for (name, size) in heads {
            out.push(DocTable {
                name,
                size,
                fields: Vec::new(),
                line: i + 1,
            });
        }
        i += 2; // header + separator
        while i < lines.len() && lines[i].trim().starts_with('|') {
            let r = cells(lines[i]);
            let bad_row = || format!("line {}: bad row {:?}", i + 1, lines[i]);
            if single {
                let off = r.get(1).and_then(|s| number(s)).ok_or_else(bad_row)?;
                let sz = r.get(2).and_then(|s| number(s)).ok_or_else(bad_row)?;
                out[first].fields.push((field_name(r[0]), off, sz));
            } else {
                let sz = r.get(1).and_then(|s| number(s)).ok_or_else(bad_row)?;
                for (k, t) in out[first..].iter_mut().enumerate() {
                    let cell = r.get(2 + k).copied().unwrap_or("");
                    if absent(cell) {
                        continue;
                    }
                    let off = number(cell).ok_or_else(bad_row)?;
                    t.fields.push((field_name(r[0]), off, sz));
                }
            }
            i += 1;
        }
    }
    Ok(out)
}

fn code_table(t: &Table) -> DocTable {
    DocTable {
        name: t.name.to_string(),
        size: t.size,
        fields: t
            .fields
            .iter()
            .map(|f| (f.name.to_ascii_lowercase(), f.offset, f.size))
            .collect(),
        line: 0,
    }
}

/// Every difference between the document's tables and the code's.
fn differences(doc: &str) -> Vec<String> {
    differences_in(doc, TABLES)
}

fn differences_in(doc: &str, tables: &[Table]) -> Vec<String> {
    let docs = match doc_tables(doc) {
        Ok(d) => d,
        Err(e) => return vec![e],
    };
    let mut errs = Vec::new();
    for t in tables {
        let want = code_table(t);
        let found: Vec<&DocTable> = docs.iter().filter(|d| d.name == want.name).collect();
        let [d] = found[..] else {
            errs.push(format!(
                "layout `{}`: {} tables in docs/protocol.md, want 1",
                want.name,
                found.len()
            ));
            continue;
        };
        if d.size != want.size {
            errs.push(format!(
                "docs/protocol.md:{}: `{}` is {} B in the doc, {} B in the code",
                d.line, want.name, d.size, want.size
            ));
        }
        if d.fields != want.fields {
            errs.push(format!(
                "docs/protocol.md:{}: `{}` fields differ\n  doc:  {:?}\n  code: {:?}",
                d.line, want.name, d.fields, want.fields
            ));
        }
    }
    for d in &docs {
        if !tables.iter().any(|t| t.name == d.name) {
            errs.push(format!(
                "docs/protocol.md:{}: table `{}` names no layout of device::layout",
                d.line, d.name
            ));
        }
    }
    errs
}

#[test]
fn protocol_md_tables_match_the_layout_code() {
    let errs = differences(DOC);
    assert!(errs.is_empty(), "\n{}", errs.join("\n"));
}

#[test]
fn a_changed_offset_or_size_in_the_doc_is_caught() {
    let plain = device::layout::se_plain::TABLE;
    let rows: String = plain
        .fields
        .iter()
        .map(|f| {
            format!(
                "| `{}` | {} | {} | |\n",
                f.name.to_ascii_lowercase(),
                f.offset,
                f.size
            )
        })
        .collect();
    let doc = format!("| `se_plain` (40 B) | offset | size | notes |\n|---|---|---|---|\n{rows}");
    assert!(differences_in(&doc, &[plain]).is_empty());
    let bad = doc.replace("| `req_tid` | 8 | 8 |", "| `req_tid` | 12 | 8 |");
    assert_ne!(bad, doc);
    assert_eq!(differences_in(&bad, &[plain]).len(), 1);
    let bad = doc.replace("(40 B)", "(44 B)");
    assert_eq!(differences_in(&bad, &[plain]).len(), 1);
    // The same layout in the several-layouts shape, and a missing field there.
    let wide: String = plain
        .fields
        .iter()
        .map(|f| {
            format!(
                "| {} | {} | {} | - |\n",
                f.name.to_ascii_lowercase(),
                f.size,
                f.offset
            )
        })
        .collect();
    let doc =
        format!("| field | size | `se_plain` (40 B) | `x` (8 B) |\n|---|---|---|---|\n{wide}");
    let t = doc_tables(&doc).unwrap();
    assert_eq!((t.len(), t[1].fields.len()), (2, 0));
    assert!(
        differences_in(&doc, &[plain]).len() == 1,
        "unknown layout `x` is reported"
    );
    let bad = doc.replace("| len | 4 | 24 | - |\n", "");
    assert_eq!(differences_in(&bad, &[plain]).len(), 2);
}
