//! Cross-reference data: where each object is. Classic tables are not loaded into
//! memory: only their subsection headers are, and a lookup reads the one fixed-width row
//! it needs from the file. Xref streams keep their decoded rows (bounded by the decode
//! cap). Sections are searched newest first, so incremental updates win. When the xref
//! cannot be read, [`scan`] rebuilds one by finding every `N G obj` in the file.

use std::collections::{HashMap, HashSet};

use memchr::memmem;

use super::syntax::{Bytes, Dict, FileBytes, Keyword, Lexer, Object, Parser, Token};
use super::{Budget, Failure, Res, broken, filter};
use crate::ProbeError;

/// Where an object lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Deleted (or an entry type the format reserves, which reads as null).
    Free,
    /// At a byte offset of the file, with its generation.
    At { offset: u64, generation: u16 },
    /// Inside object stream `stream`, the `index`-th object.
    InStream { stream: u32, index: u32 },
}

/// A run of consecutive object numbers and where their rows are.
#[derive(Debug, Clone, Copy)]
struct Run {
    first: u32,
    count: u32,
    /// File offset of the first row (tables) or index of the first row (streams).
    at: u64,
}

#[derive(Debug)]
enum Section {
    /// A classic table: rows of `row_len` bytes in the file.
    Table { runs: Vec<Run>, row_len: Vec<u8> },
    /// An xref stream's decoded rows.
    Stream { widths: [usize; 3], runs: Vec<Run>, rows: Vec<u8> },
    /// Rebuilt by scanning the file.
    Scanned(HashMap<u32, Entry>),
}

/// The xref sections, newest first.
#[derive(Debug, Default)]
pub(crate) struct Xref {
    sections: Vec<Section>,
}

/// The trailer entries the probe uses, from the newest trailer that has each.
#[derive(Debug, Default)]
pub(crate) struct Trailer {
    pub(crate) root: Option<Object>,
    pub(crate) encrypt: Option<Object>,
    pub(crate) id: Option<Object>,
}

impl Trailer {
    /// Takes the entries still missing from `dict`, if they are of the right type (a
    /// damaged newer trailer does not hide a sound older one).
    fn absorb(&mut self, mut dict: Dict) {
        for (key, value) in dict.0.drain(..) {
            let slot = match (&key[..], &value) {
                (b"Root", Object::Ref(_)) => &mut self.root,
                (b"Encrypt", Object::Ref(_) | Object::Dict(_)) => &mut self.encrypt,
                (b"ID", Object::Ref(_) | Object::Array(_)) => &mut self.id,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
    }
}

/// More sections than this is not an edit history but an attack on lookups, each of
/// which searches every section.
const MAX_SECTIONS: usize = 1024;
/// `startxref` is looked for this far from the end (readers use 1 KiB; some writers
/// append a little junk after `%%EOF`).
const TAIL: u64 = 4096;

impl Xref {
    /// Where object `num` is, from the newest section that lists it.
    pub(crate) fn lookup(&self, file: &mut FileBytes, num: u32) -> Res<Option<Entry>> {
        for section in &self.sections {
            let found = match section {
                Section::Table { runs, row_len } => match find(runs, num) {
                    Some((i, run)) => {
                        Some(table_row(file, run.at + u64::from(num - run.first) * u64::from(row_len[i]))?)
                    }
                    None => None,
                },
                Section::Stream { widths, runs, rows } => find(runs, num)
                    .map(|(_, run)| stream_row(widths, rows, run.at + u64::from(num - run.first))),
                Section::Scanned(map) => map.get(&num).copied(),
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Adds object stream members found while rebuilding, unless a top-level object of
    /// the same number was found too.
    pub(crate) fn add_scanned(&mut self, num: u32, entry: Entry) -> bool {
        match self.sections.first_mut() {
            Some(Section::Scanned(map)) if !map.contains_key(&num) => {
                map.insert(num, entry);
                true
            }
            _ => false,
        }
    }
}

/// The run holding `num` in runs sorted by `first`, with its position.
fn find(runs: &[Run], num: u32) -> Option<(usize, &Run)> {
    let i = runs.partition_point(|r| r.first <= num).checked_sub(1)?;
    let run = &runs[i];
    (u64::from(num) < u64::from(run.first) + u64::from(run.count)).then_some((i, run))
}

/// One classic row, `oooooooooo ggggg n`: offset, generation, in use (`n`) or free.
fn table_row(file: &mut FileBytes, pos: u64) -> Res<Entry> {
    let mut row = [0u8; 18];
    for (i, b) in row.iter_mut().enumerate() {
        *b = file.byte(pos + i as u64)?.ok_or_else(|| broken("an xref row runs past the end"))?;
    }
    let digits = |s: &[u8]| -> Option<u64> {
        s.iter().try_fold(0u64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0')))
    };
    match (digits(&row[..10]), digits(&row[11..16]), row[17]) {
        (Some(offset), Some(generation), b'n') => {
            Ok(Entry::At { offset, generation: u16::try_from(generation).unwrap_or(u16::MAX) })
        }
        (Some(_), Some(_), b'f') => Ok(Entry::Free),
        _ => Err(broken(format!("malformed xref row at {pos}"))),
    }
}

fn stream_row(widths: &[usize; 3], rows: &[u8], index: u64) -> Entry {
    let row_len: usize = widths.iter().sum();
    let start = usize::try_from(index).unwrap_or(usize::MAX).saturating_mul(row_len);
    let Some(row) = rows.get(start..start + row_len) else { return Entry::Free };
    let mut fields = [0u64; 3];
    let mut at = 0;
    for (field, &w) in fields.iter_mut().zip(widths) {
        *field = row[at..at + w].iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
        at += w;
    }
    // A zero-width type field means type 1.
    let kind = if widths[0] == 0 { 1 } else { fields[0] };
    match kind {
        1 => Entry::At { offset: fields[1], generation: u16::try_from(fields[2]).unwrap_or(u16::MAX) },
        2 => match (u32::try_from(fields[1]), u32::try_from(fields[2])) {
            (Ok(stream), Ok(index)) => Entry::InStream { stream, index },
            _ => Entry::Free,
        },
        _ => Entry::Free,
    }
}

/// Reads the xref chain from `startxref` back through every `/Prev` (and hybrid
/// `/XRefStm`), charging what it keeps to `budget`.
pub(crate) fn load(file: &mut FileBytes, budget: &mut Budget, max_depth: u32) -> Res<(Xref, Trailer)> {
    let start = find_startxref(file)?;
    let mut xref = Xref::default();
    let mut trailer = Trailer::default();
    let mut seen = HashSet::new();
    let mut next = vec![start];
    while let Some(offset) = next.pop() {
        if !seen.insert(offset) {
            // A /Prev loop: what is read so far is the whole history.
            continue;
        }
        if xref.sections.len() >= MAX_SECTIONS {
            return Err(Failure::Final(ProbeError::TooLarge {
                what: "PDF xref sections".into(),
                limit: MAX_SECTIONS as u64,
            }));
        }
        let mut lex = Lexer::new(file, offset);
        let (section, dict) = if lex.next(false)? == Token::Keyword(Keyword::Xref) {
            let after = lex.pos;
            table(file, after, budget, max_depth)?
        } else {
            stream(file, offset, budget, max_depth)?
        };
        xref.sections.push(section);
        let prev = offset_in(&dict, b"Prev");
        // A hybrid file's xref stream comes after its table, before older sections.
        if let Some(stm) = offset_in(&dict, b"XRefStm")
            && matches!(xref.sections.last(), Some(Section::Table { .. }))
            && seen.insert(stm)
        {
            let (section, _) = stream(file, stm, budget, max_depth)?;
            xref.sections.push(section);
        }
        trailer.absorb(dict);
        next.extend(prev);
    }
    Ok((xref, trailer))
}

fn offset_in(dict: &Dict, key: &[u8]) -> Option<u64> {
    dict.int(key).and_then(|v| u64::try_from(v).ok())
}

fn find_startxref(file: &mut FileBytes) -> Res<u64> {
    let size = file.size();
    let from = size.saturating_sub(TAIL);
    let tail = file.read_at(from, TAIL as usize)?;
    let at = memmem::rfind(&tail, b"startxref").ok_or_else(|| broken("no startxref near the end"))?;
    let mut lex = Lexer::new(file, from + at as u64 + 9);
    match lex.next(false)? {
        Token::Int(n) if n >= 0 && (n as u64) < size => Ok(n as u64),
        other => Err(broken(format!("startxref is followed by {other:?}"))),
    }
}

/// A classic table from just after `xref` to its trailer dictionary.
fn table(file: &mut FileBytes, pos: u64, budget: &mut Budget, max_depth: u32) -> Res<(Section, Dict)> {
    let size = file.size();
    let mut runs = Vec::new();
    let mut row_lens = Vec::new();
    let mut lex = Lexer::new(file, pos);
    loop {
        let (first, count) = match lex.next(false)? {
            Token::Keyword(Keyword::Trailer) => break,
            Token::Int(first) => match lex.next(false)? {
                Token::Int(count) => (first, count),
                other => return Err(broken(format!("xref subsection count is {other:?}"))),
            },
            other => return Err(broken(format!("xref subsection header is {other:?}"))),
        };
        let (Ok(first), Ok(count)) = (u32::try_from(first), u32::try_from(count)) else {
            return Err(broken(format!("xref subsection {first} {count}")));
        };
        lex.skip_whitespace()?;
        let at = lex.pos;
        if count == 0 {
            continue;
        }
        let row_len = row_length(&mut lex, at)?;
        // Bounded by the file: a count whose rows are not there is a broken table.
        let end = at + u64::from(count) * u64::from(row_len);
        if end > size || u64::from(first) + u64::from(count) > 1 << 32 {
            return Err(broken(format!("xref subsection of {count} rows at {at} runs past the end")));
        }
        budget.charge(std::mem::size_of::<Run>() as u64 + 1, "PDF xref subsections")?;
        runs.push(Run { first, count, at });
        row_lens.push(row_len);
        lex.pos = end;
    }
    let after = lex.pos;
    let mut parser = Parser::new(file, after, max_depth, budget.room());
    let dict = parser.top_value()?.into_dict().ok_or_else(|| broken("the trailer is not a dictionary"))?;
    // Lookups search by number.
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| runs[i].first);
    let runs_sorted = order.iter().map(|&i| runs[i]).collect();
    let lens_sorted = order.iter().map(|&i| row_lens[i]).collect();
    Ok((Section::Table { runs: runs_sorted, row_len: lens_sorted }, dict))
}

/// A row is 18 bytes and an end of line of 1 to 3 of space, CR, LF: 20 as written by
/// the standard, 19 or 21 by some writers. The first row says which.
fn row_length(lex: &mut Lexer<'_, FileBytes>, at: u64) -> Res<u8> {
    lex.pos = at + 17;
    let mut len = 18u8;
    if !matches!(lex.next_byte()?, Some(b'n' | b'f')) {
        return Err(broken(format!("malformed xref row at {at}")));
    }
    while len < 21 {
        match lex.next_byte()? {
            Some(b' ' | b'\r' | b'\n') => len += 1,
            _ => break,
        }
    }
    if len == 18 {
        return Err(broken(format!("xref row at {at} has no end of line")));
    }
    Ok(len)
}

/// An xref stream object at `offset`: its dictionary (the trailer of its section) and
/// its rows, decoded under the stream cap.
fn stream(file: &mut FileBytes, offset: u64, budget: &mut Budget, max_depth: u32) -> Res<(Section, Dict)> {
    let mut parser = Parser::new(file, offset, max_depth, budget.room());
    let (_, obj) = parser.indirect(None)?;
    let (Some(dict), Some(data_at)) = (obj.value.into_dict(), obj.stream) else {
        return Err(broken(format!("no xref table or stream at {offset}")));
    };
    let widths = match dict.get(b"W") {
        Some(Object::Array(w)) if w.len() == 3 => {
            let mut out = [0usize; 3];
            for (slot, v) in out.iter_mut().zip(w) {
                *slot = match v {
                    Object::Int(n @ 0..=8) => *n as usize,
                    _ => return Err(broken("xref stream /W entry out of range")),
                };
            }
            out
        }
        _ => return Err(broken("xref stream without /W")),
    };
    let row_len: usize = widths.iter().sum();
    if row_len == 0 {
        return Err(broken("xref stream rows of 0 bytes"));
    }
    let cap = budget.stream_cap();
    let raw = super::store::stream_bytes(file, data_at, dict.int(b"Length"), cap)?;
    let rows = filter::decode(raw, &dict, cap)?;
    let total = (rows.len() / row_len) as u64;
    let pairs: Vec<(i64, i64)> = match dict.get(b"Index") {
        Some(Object::Array(items)) => items
            .chunks(2)
            .map(|p| match p {
                [Object::Int(a), Object::Int(b)] => Ok((*a, *b)),
                _ => Err(broken("xref stream /Index is not pairs of integers")),
            })
            .collect::<Res<_>>()?,
        _ => vec![(0, dict.int(b"Size").unwrap_or(total as i64))],
    };
    // Counts are bounded by the rows actually decoded, never by what /Index declares.
    let mut runs = Vec::new();
    let mut used = 0u64;
    for (first, count) in pairs {
        let (Ok(first), Ok(count)) = (u32::try_from(first), u64::try_from(count)) else {
            return Err(broken(format!("xref stream subsection {first} {count}")));
        };
        let count = count.min(total - used).min(u64::from(u32::MAX - first));
        if count == 0 {
            continue;
        }
        runs.push(Run { first, count: count as u32, at: used });
        used += count;
    }
    budget.charge(rows.len() as u64 + (runs.len() * std::mem::size_of::<Run>()) as u64, "PDF xref stream")?;
    runs.sort_by_key(|r| r.first);
    Ok((Section::Stream { widths, runs, rows }, dict))
}

/// What a scan of the whole file found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) xref: Xref,
    pub(crate) trailer: Trailer,
    /// Object streams (by number) whose members the caller indexes.
    pub(crate) object_streams: Vec<u32>,
}

/// What an object found by a rebuild costs: a map entry is 24 bytes and a control
/// byte, at most 7/8 full, and growing holds the old and new tables at once.
pub(crate) const SCANNED_ENTRY_COST: u64 = 48;
/// Trailers and xref streams a rebuild parses, newest first, looking for the catalog.
const MAX_CANDIDATES: usize = 64;
/// Markers noted within this distance after an object's header belong to it.
const MARKER_WINDOW: u64 = 1024;
const SCAN_CHUNK: u64 = 1 << 20;
/// Bytes before a chunk re-read for context: enough for `NNNNNNNNNN GGGGG ` before `obj`.
const CONTEXT: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Hit {
    Obj,
    Trailer,
    ObjStm,
    XRef,
    Catalog,
}

/// Rebuilds the xref by reading the file once, front to back: every `N G obj` is an
/// object (a later one replaces an earlier one of the same number), every `trailer` a
/// trailer candidate, and `/ObjStm`, `/XRef`, `/Catalog` just after a header mark an
/// object stream, an xref stream (a trailer too) or the catalog. Memory is what the
/// map holds, charged to `budget`.
pub(crate) fn scan(file: &mut FileBytes, budget: &mut Budget, max_depth: u32) -> Res<Scan> {
    let size = file.size();
    let finders = [
        (Hit::Obj, memmem::Finder::new(b"obj")),
        (Hit::Trailer, memmem::Finder::new(b"trailer")),
        (Hit::ObjStm, memmem::Finder::new(b"/ObjStm")),
        (Hit::XRef, memmem::Finder::new(b"/XRef")),
        (Hit::Catalog, memmem::Finder::new(b"/Catalog")),
    ];
    let mut map: HashMap<u32, Entry> = HashMap::new();
    let mut trailers: Vec<u64> = Vec::new();
    let mut marked: Vec<(Hit, u32, u64)> = Vec::new();
    let mut last_obj: Option<(u32, u64)> = None;
    let mut hits: Vec<(u64, Hit)> = Vec::new();
    let mut base = 0u64;
    while base < size {
        let from = base.saturating_sub(CONTEXT);
        let chunk = file.chunk(from, base - from + SCAN_CHUNK + 16)?;
        hits.clear();
        for (kind, finder) in &finders {
            for i in finder.find_iter(chunk) {
                let pos = from + i as u64;
                if pos >= base && pos < base + SCAN_CHUNK {
                    hits.push((pos, *kind));
                }
            }
        }
        hits.sort_unstable();
        for &(pos, kind) in &hits {
            let i = (pos - from) as usize;
            match kind {
                Hit::Obj if i >= 3 && &chunk[i - 3..i] == b"end" => last_obj = None,
                Hit::Obj => {
                    if let Some((num, generation, start)) = object_header(chunk, i, from) {
                        if map.insert(num, Entry::At { offset: start, generation }).is_none() {
                            budget.charge(SCANNED_ENTRY_COST, "PDF objects found by a rebuild")?;
                        }
                        last_obj = Some((num, start));
                    }
                }
                Hit::Trailer => {
                    budget.charge(8, "PDF trailers found by a rebuild")?;
                    trailers.push(pos + 7);
                }
                _ => {
                    if let Some((num, start)) = last_obj
                        && pos - start < MARKER_WINDOW
                        && marked.last() != Some(&(kind, num, start))
                    {
                        budget.charge(16, "PDF objects found by a rebuild")?;
                        marked.push((kind, num, start));
                    }
                }
            }
        }
        base += SCAN_CHUNK;
    }

    // Marks of an object that a later one of the same number replaced do not count.
    let current = |num: u32, start: u64, map: &HashMap<u32, Entry>| matches!(map.get(&num), Some(Entry::At { offset, .. }) if *offset == start);
    // The newest trailer (or xref stream) naming a catalog wins; a file whose every
    // line says `trailer` gets a look at its last few only.
    let mut trailer = Trailer::default();
    for &at in trailers.iter().rev().take(MAX_CANDIDATES) {
        let mut parser = Parser::new(file, at, max_depth, budget.room());
        if let Some(d) = parser.top_value().ok().and_then(Object::into_dict)
            && d.get(b"Root").is_some()
        {
            trailer.absorb(d);
            break;
        }
    }
    let xref_streams =
        marked.iter().rev().filter(|&&(kind, num, start)| kind == Hit::XRef && current(num, start, &map));
    for &(_, _, start) in xref_streams.take(MAX_CANDIDATES) {
        if trailer.root.is_some() {
            break;
        }
        let mut parser = Parser::new(file, start, max_depth, budget.room());
        if let Some(d) = parser.indirect(None).ok().and_then(|(_, obj)| obj.value.into_dict())
            && d.get(b"Root").is_some()
        {
            trailer.absorb(d);
        }
    }
    if trailer.root.is_none()
        && let Some(&(_, num, _)) =
            marked.iter().rev().find(|&&(kind, num, start)| kind == Hit::Catalog && current(num, start, &map))
        && let Some(Entry::At { generation, .. }) = map.get(&num)
    {
        trailer.root = Some(Object::Ref((num, *generation)));
    }
    let mut object_streams: Vec<u32> = marked
        .iter()
        .filter(|&&(kind, num, start)| kind == Hit::ObjStm && current(num, start, &map))
        .map(|&(_, num, _)| num)
        .collect();
    object_streams.dedup();
    if trailer.root.is_none() {
        return Err(broken("a rebuild found no catalog"));
    }
    Ok(Scan { xref: Xref { sections: vec![Section::Scanned(map)] }, trailer, object_streams })
}

/// `N G obj` ending at `chunk[i..i + 3]`: the number, generation and the header's
/// offset, unless `obj` is part of another word (`endobj`) or not after two integers.
fn object_header(chunk: &[u8], i: usize, from: u64) -> Option<(u32, u16, u64)> {
    let after = chunk.get(i + 3).copied();
    if after.is_some_and(|b| {
        !matches!(b, b'\0' | b'\t' | b'\n' | b'\x0c' | b'\r' | b' ' | b'<' | b'[' | b'/' | b'%' | b'(')
    }) {
        return None;
    }
    let is_space = |b: u8| matches!(b, b'\0' | b'\t' | b'\n' | b'\x0c' | b'\r' | b' ');
    let mut j = i;
    let number = |j: &mut usize, max: usize| -> Option<u64> {
        let end = *j;
        while *j > 0 && end - *j < max && chunk[*j - 1].is_ascii_digit() {
            *j -= 1;
        }
        if *j == end {
            return None;
        }
        std::str::from_utf8(&chunk[*j..end]).ok()?.parse().ok()
    };
    let spaces = |j: &mut usize| -> bool {
        let end = *j;
        while *j > 0 && end - *j < 16 && is_space(chunk[*j - 1]) {
            *j -= 1;
        }
        *j < end
    };
    if !spaces(&mut j) {
        return None;
    }
    let generation = number(&mut j, 5)?;
    if !spaces(&mut j) {
        return None;
    }
    let num = number(&mut j, 10)?;
    // The number must start a token.
    if j > 0 && !(is_space(chunk[j - 1]) || matches!(chunk[j - 1], b'>' | b']' | b')' | b'}')) {
        return None;
    }
    Some((u32::try_from(num).ok()?, u16::try_from(generation).ok()?, from + j as u64))
}
