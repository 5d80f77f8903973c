//! PDF extraction: page count and the first page's display size (CropBox else MediaBox,
//! inherited through the page tree, `/Rotate` applied). We read the xref, the trailer
//! and the page tree ourselves, one object at a time by offset, because lopdf loads and
//! parses the whole document: memory was O(file) and worse (issue 9: nested arrays, an
//! object stream of a million objects, an xref whose entries all name one big object).
//! Here memory is O(what the page tree touches), bounded by `limits.max_memory_bytes`:
//!
//! - [`syntax`]: a tokenizer and a parser with an explicit stack under
//!   `limits.max_nesting`, which skips the values the probe does not read;
//! - [`xref`]: tables read row by row from the file, xref streams, incremental updates,
//!   and a rebuild from a scan of the file when offsets are broken;
//! - [`store`]: objects by number, object streams decoded lazily, bounded caches, and
//!   decryption with the empty user password (lopdf's security handler, the one path
//!   where it remains, on the encryption dictionary and one stream at a time);
//! - [`filter`]: FlateDecode and predictors, capped.
//!
//! The page tree walk is iterative too, and visits each node once.

mod filter;
mod store;
mod syntax;
mod xref;

use std::collections::HashSet;
use std::rc::Rc;

use asset_core::{AssetMetadata, DataType, Limits};

use crate::{Format, ProbeError, Result, Source};
use store::Doc;
use syntax::{Dict, FileBytes, Object, ObjectId};

const FORMAT: &str = "pdf";

/// A trailing `%%EOF` is looked for this far from the end, as readers do.
const EOF_WINDOW: u64 = 1024;

pub(crate) fn probe(src: &Source, format: Format, limits: &Limits) -> Result<AssetMetadata> {
    let mut file = FileBytes::new(src.file()?, src.size());
    let complete = ends_with_eof_marker(&mut file)?;
    let mut doc = Doc::new(file, limits);

    let first = doc.load_xref().and_then(|()| summarize(&mut doc, limits));
    let (pages, width, height) = match first {
        Ok(summary) => summary,
        // A tree that loops or nests too deep is what the file says, encryption is what
        // it is, and a limit is a limit: rebuilding the xref would not change them.
        Err(Failure::Final(err)) => return Err(err),
        Err(Failure::Repairable(err)) => match doc.repair().and_then(|()| summarize(&mut doc, limits)) {
            Ok(summary) => summary,
            Err(Failure::Final(
                e @ (ProbeError::Io(_) | ProbeError::TooLarge { .. } | ProbeError::Encrypted { .. }),
            )) => return Err(e),
            Err(_) if !complete => {
                return Err(ProbeError::truncated(FORMAT, format!("no %%EOF at the end; {err}")));
            }
            Err(Failure::Final(e)) => return Err(e),
            Err(Failure::Repairable(_)) => return Err(err),
        },
    };

    let mut meta = AssetMetadata::new(DataType::Pdf, format.mime(), src.size());
    meta.page_count = Some(pages);
    meta.width = Some(width);
    meta.height = Some(height);
    Ok(meta)
}

fn ends_with_eof_marker(file: &mut FileBytes) -> Result<bool> {
    let size = syntax::Bytes::size(file);
    let tail = file.read_at(size.saturating_sub(EOF_WINDOW), EOF_WINDOW as usize)?;
    Ok(memchr::memmem::find(&tail, b"%%EOF").is_some())
}

/// Why the reader gave no answer: something was missing or unreadable, which a rebuilt
/// xref may find (`Repairable`), or the file is hostile, encrypted, over a limit or
/// could not be read (`Final`).
#[derive(Debug)]
pub(crate) enum Failure {
    Repairable(ProbeError),
    Final(ProbeError),
}

pub(crate) type Res<T> = std::result::Result<T, Failure>;

pub(crate) fn broken(detail: impl std::fmt::Display) -> Failure {
    Failure::Repairable(ProbeError::corrupt(FORMAT, detail))
}

pub(crate) fn hostile(detail: impl std::fmt::Display) -> Failure {
    Failure::Final(ProbeError::corrupt(FORMAT, detail))
}

/// An I/O error is final: a rebuild would read the same bytes (and on a partial
/// download, the probe asks for them).
impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Final(ProbeError::Io(e))
    }
}

/// The bytes the reader holds at once, against `limits.max_memory_bytes`.
#[derive(Debug)]
pub(crate) struct Budget {
    held: u64,
    limit: u64,
}

impl Budget {
    fn new(limit: u64) -> Self {
        Budget { held: 0, limit }
    }

    fn limit(&self) -> u64 {
        self.limit
    }

    pub(crate) fn charge(&mut self, bytes: u64, what: &str) -> Res<()> {
        self.held = self.held.saturating_add(bytes);
        if self.held > self.limit {
            return Err(Failure::Final(ProbeError::TooLarge { what: what.into(), limit: self.limit }));
        }
        Ok(())
    }

    pub(crate) fn release(&mut self, bytes: u64) {
        self.held = self.held.saturating_sub(bytes);
    }

    /// What one object's parse may still build.
    pub(crate) fn room(&self) -> u64 {
        self.limit.saturating_sub(self.held)
    }

    /// The most one stream may take, raw or decoded: half the limit, and what is left.
    pub(crate) fn stream_cap(&self) -> usize {
        usize::try_from((self.limit / 2).min(self.room())).unwrap_or(usize::MAX)
    }
}

/// The attributes a page inherits from its ancestors (PDF 32000-1, 7.7.3.4).
#[derive(Debug, Clone, Copy, Default)]
struct Inherited {
    media_box: Option<[f64; 4]>,
    crop_box: Option<[f64; 4]>,
    rotate: Option<i64>,
}

/// A page tree node being walked: its kids and the next one to visit.
struct Frame {
    kids: Vec<ObjectId>,
    next: usize,
    inherited: Inherited,
}

const KID_COST: u64 = std::mem::size_of::<ObjectId>() as u64;
const SEEN_COST: u64 = 24;

/// Walks the page tree depth first, with a stack of at most `limits.max_nesting` frames
/// (no recursion): counts the pages and sizes the first one. A node seen twice (a loop,
/// or a page listed twice) or nested deeper than `limits.max_nesting` makes the file
/// corrupt; more than `limits.max_items` nodes, too large. Each node is parsed once,
/// and only the first page's path resolves boxes. What the walk holds (the kids of the
/// open nodes, the nodes seen) is charged to the budget and given back at the end.
fn summarize(doc: &mut Doc, limits: &Limits) -> Res<(u32, u32, u32)> {
    let mut held = 0;
    let result = walk(doc, limits, &mut held);
    doc.budget.release(held);
    result
}

fn walk(doc: &mut Doc, limits: &Limits, held: &mut u64) -> Res<(u32, u32, u32)> {
    let root = match &doc.trailer.root {
        Some(Object::Ref(id)) => *id,
        _ => return Err(broken("the trailer has no /Root reference")),
    };
    let catalog = doc.dict(root).map_err(|e| relabel(e, "the catalog"))?;
    let pages_root = match catalog.get(b"Pages") {
        Some(Object::Ref(id)) => *id,
        _ => return Err(broken("the catalog has no /Pages reference")),
    };
    drop(catalog);

    let mut charge = |doc: &mut Doc, bytes: u64| -> Res<()> {
        *held += bytes;
        doc.budget.charge(bytes, "PDF page tree")
    };
    let mut stack: Vec<Frame> = Vec::new();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut pages: u64 = 0;
    let mut first: Option<(u32, u32)> = None;
    let mut next = Some((pages_root, Inherited::default()));

    loop {
        let (id, inherited) = match next.take() {
            Some(node) => node,
            None => {
                let Some(top) = stack.last_mut() else { break };
                match top.kids.get(top.next) {
                    Some(&kid) => {
                        top.next += 1;
                        (kid, top.inherited)
                    }
                    None => {
                        stack.pop();
                        continue;
                    }
                }
            }
        };
        let depth = stack.len() as u32;
        if !seen.insert(id) {
            return Err(hostile(format!("page tree reaches object {} {} twice", id.0, id.1)));
        }
        if seen.len() as u64 > limits.max_items {
            return Err(Failure::Final(ProbeError::TooLarge {
                what: "PDF page tree".into(),
                limit: limits.max_items,
            }));
        }
        charge(doc, SEEN_COST)?;
        let node = doc.dict(id).map_err(|e| relabel(e, &format!("page tree node {} {}", id.0, id.1)))?;
        let is_tree_node = match node.name(b"Type") {
            Some(b"Pages") => true,
            Some(b"Page") => false,
            _ => node.get(b"Kids").is_some(),
        };
        // Only the first page's path needs the inherited attributes.
        let here = if first.is_none() {
            Inherited {
                media_box: rect(doc, &node, b"MediaBox")?.or(inherited.media_box),
                crop_box: rect(doc, &node, b"CropBox")?.or(inherited.crop_box),
                rotate: integer(doc, &node, b"Rotate")?.or(inherited.rotate),
            }
        } else {
            inherited
        };
        if !is_tree_node {
            pages += 1;
            if first.is_none() {
                first = Some(display_size(here, id).map_err(Failure::Repairable)?);
            }
            continue;
        }
        if depth >= limits.max_nesting {
            return Err(hostile(format!("page tree nested deeper than {} levels", limits.max_nesting)));
        }
        let kids = kid_ids(doc, &node, id)?;
        charge(doc, kids.len() as u64 * KID_COST)?;
        stack.push(Frame { kids, next: 0, inherited: here });
    }

    let (width, height) = first.ok_or_else(|| broken("the page tree has no pages"))?;
    let pages = u32::try_from(pages).map_err(|_| {
        Failure::Final(ProbeError::TooLarge { what: format!("{pages} pages"), limit: u32::MAX.into() })
    })?;
    Ok((pages, width, height))
}

/// Prefixes what failed with where in the tree it was.
fn relabel(err: Failure, what: &str) -> Failure {
    match err {
        Failure::Repairable(ProbeError::Corrupt { detail, .. }) => broken(format!("{what}: {detail}")),
        other => other,
    }
}

/// A node's `/Kids`, direct or through a reference: every entry a reference.
fn kid_ids(doc: &mut Doc, node: &Dict, id: ObjectId) -> Res<Vec<ObjectId>> {
    let no_kids = || broken(format!("page tree node {} {} has no /Kids array", id.0, id.1));
    let value = node.get(b"Kids").ok_or_else(no_kids)?;
    let held: Rc<Object>;
    let kids = match doc.deref(value)? {
        Some(v) => {
            held = v;
            &*held
        }
        None => value,
    };
    let Object::Array(items) = kids else { return Err(no_kids()) };
    items
        .iter()
        .map(|k| match k {
            Object::Ref(r) => Ok(*r),
            _ => Err(broken("a /Kids entry is not an indirect reference")),
        })
        .collect()
}

fn display_size(page: Inherited, id: ObjectId) -> Result<(u32, u32)> {
    let [x1, y1, x2, y2] = page
        .crop_box
        .or(page.media_box)
        .ok_or_else(|| ProbeError::corrupt(FORMAT, format!("page {} {} has no MediaBox", id.0, id.1)))?;
    let points = |v: f64| -> Result<u32> {
        let r = v.abs().round();
        if r.is_finite() && r <= f64::from(u32::MAX) {
            Ok(r as u32)
        } else {
            Err(ProbeError::corrupt(FORMAT, format!("page box side of {v} points")))
        }
    };
    let (w, h) = (points(x2 - x1)?, points(y2 - y1)?);
    Ok(match page.rotate.unwrap_or(0).rem_euclid(360) {
        90 | 270 => (h, w),
        _ => (w, h),
    })
}

/// Follows `value` if it is a reference; a referenced object that cannot be read counts
/// as absent (as a malformed box does), unless the failure is final.
fn resolved(doc: &mut Doc, value: &Object) -> Res<Option<Rc<Object>>> {
    match doc.deref(value) {
        Ok(v) => Ok(v),
        Err(Failure::Repairable(_)) => Ok(Some(Rc::new(Object::Null))),
        Err(e) => Err(e),
    }
}

fn number(doc: &mut Doc, value: &Object) -> Res<Option<f64>> {
    let held = resolved(doc, value)?;
    Ok(match held.as_deref().unwrap_or(value) {
        Object::Int(i) => Some(*i as f64),
        Object::Real(r) => Some(*r),
        _ => None,
    })
}

/// A rectangle `[x1 y1 x2 y2]`, directly or through references.
fn rect(doc: &mut Doc, dict: &Dict, key: &[u8]) -> Res<Option<[f64; 4]>> {
    let Some(value) = dict.get(key) else { return Ok(None) };
    let held = resolved(doc, value)?;
    let Object::Array(array) = held.as_deref().unwrap_or(value) else { return Ok(None) };
    if array.len() != 4 {
        return Ok(None);
    }
    let mut out = [0f64; 4];
    for (slot, item) in out.iter_mut().zip(array) {
        match number(doc, item)? {
            Some(v) => *slot = v,
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

fn integer(doc: &mut Doc, dict: &Dict, key: &[u8]) -> Res<Option<i64>> {
    let Some(value) = dict.get(key) else { return Ok(None) };
    Ok(match number(doc, value)? {
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => Some(v as i64),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
