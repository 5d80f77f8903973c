//! PDF extraction: page count and the first page's display size (CropBox else MediaBox,
//! inherited through the page tree, `/Rotate` applied). lopdf parses the document; the
//! page tree is walked here, iteratively and under limits, because hostile trees nest
//! or loop and lopdf's own page walk recurses.

use std::collections::HashSet;
use std::io::Read;

use asset_core::{AssetMetadata, DataType, Limits};
use lopdf::{Dictionary, Document, LoadOptions, Object, ObjectId};

use crate::{Format, ProbeError, Result, Source};

const FORMAT: &str = "pdf";

// lopdf reads the whole file into memory and parses every object, copying each stream's
// bytes before [`drop_stream_content`] throws them away, so peak memory is about twice
// the file size (measured: a 60 MiB PDF peaks at 135 MiB RSS). A file may therefore be
// at most three quarters of `limits.max_memory_bytes` (24 MiB by default), which keeps
// the peak under the 64 MiB budget of the issue (a full 32 MiB file peaked at 76 MiB);
// larger PDFs are `TooLarge` until the limit is raised.
// lopdf 0.47 has no lazy loader: `Document::load_metadata` also reads the whole file,
// and gives the page count but no page size.

/// A trailing `%%EOF` is looked for this far from the end, as readers do.
const EOF_WINDOW: usize = 1024;

pub(crate) fn probe(src: &Source, format: Format, limits: &Limits) -> Result<AssetMetadata> {
    let bound = limits.max_memory_bytes.saturating_mul(3) / 4;
    if src.size() > bound {
        return Err(ProbeError::TooLarge { what: format!("PDF of {} bytes", src.size()), limit: bound });
    }
    let mut bytes = Vec::new();
    src.reader()?.take(bound).read_to_end(&mut bytes)?;
    let complete = ends_with_eof_marker(&bytes);

    let first = load(&bytes, limits, false).and_then(|doc| summarize(&doc, limits));
    let (pages, width, height) = match first {
        Ok(summary) => summary,
        // Only an unfiltered, lenient load rebuilds the xref by itself when it reads but
        // names the wrong objects; the filtered load needs asking. A tree that loops or
        // nests too deep is what the file says, and rebuilding would not change it.
        Err(Failure::Hostile(err)) => return Err(err),
        Err(Failure::Missing(err)) => {
            match load(&bytes, limits, true).and_then(|doc| summarize(&doc, limits)) {
                Ok(summary) => summary,
                Err(_) if !complete => {
                    return Err(ProbeError::truncated(FORMAT, format!("no %%EOF at the end; {err}")));
                }
                Err(_) => return Err(err),
            }
        }
    };

    let mut meta = AssetMetadata::new(DataType::Pdf, format.mime(), src.size());
    meta.page_count = Some(pages);
    meta.width = Some(width);
    meta.height = Some(height);
    Ok(meta)
}

fn ends_with_eof_marker(bytes: &[u8]) -> bool {
    bytes[bytes.len().saturating_sub(EOF_WINDOW)..].windows(5).any(|w| w == b"%%EOF")
}

/// Why a load or a page-tree walk gave no answer: something was missing or unreadable
/// (a rebuilt xref may find it), or the file is hostile or encrypted (nothing will).
#[derive(Debug)]
enum Failure {
    Missing(ProbeError),
    Hostile(ProbeError),
}

fn missing(detail: impl std::fmt::Display) -> Failure {
    Failure::Missing(ProbeError::corrupt(FORMAT, detail))
}

fn hostile(detail: impl std::fmt::Display) -> Failure {
    Failure::Hostile(ProbeError::corrupt(FORMAT, detail))
}

fn load(bytes: &[u8], limits: &Limits, reconstruct: bool) -> Result<Document, Failure> {
    let options = LoadOptions {
        filter: Some(drop_stream_content),
        max_decompressed_size: Some(usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX)),
        force_reconstruct: reconstruct,
        ..LoadOptions::default()
    };
    let doc = Document::load_mem_with_options(bytes, options).map_err(|e| lopdf_error(&e, limits))?;
    // lopdf decrypts by itself when the user password is empty; otherwise it loads the
    // trailer and nothing it could read.
    if doc.trailer.has(b"Encrypt") && !doc.was_encrypted() {
        return Err(Failure::Hostile(ProbeError::Encrypted { format: FORMAT }));
    }
    Ok(doc)
}

fn lopdf_error(err: &lopdf::Error, limits: &Limits) -> Failure {
    match err {
        lopdf::Error::Decompress(lopdf::DecompressError::MemoryLimitExceeded { .. }) => {
            Failure::Hostile(ProbeError::TooLarge {
                what: format!("a PDF stream ({err})"),
                limit: limits.max_memory_bytes,
            })
        }
        lopdf::Error::InvalidPassword => Failure::Hostile(ProbeError::Encrypted { format: FORMAT }),
        _ => missing(err),
    }
}

/// Keeps object streams (their objects are extracted after this runs) and replaces every
/// other stream by its dictionary: page contents, images and fonts are never needed.
/// lopdf keeps the object as changed in place for top-level objects and the returned one
/// for members of object streams (which are never streams), so it does both.
fn drop_stream_content(id: ObjectId, object: &mut Object) -> Option<(ObjectId, Object)> {
    if let Object::Stream(stream) = object
        && !stream.dict.has_type(b"ObjStm")
    {
        *object = Object::Dictionary(std::mem::take(&mut stream.dict));
    }
    Some((id, object.clone()))
}

/// The attributes a page inherits from its ancestors (PDF 32000-1, 7.7.3.4).
#[derive(Debug, Clone, Copy, Default)]
struct Inherited {
    media_box: Option<[f64; 4]>,
    crop_box: Option<[f64; 4]>,
    rotate: Option<i64>,
}

/// Walks the page tree depth first with an explicit stack: counts the pages and sizes the
/// first one. A node seen twice (a loop, or a page listed twice) or nested deeper than
/// `limits.max_nesting` makes the file corrupt; more than `limits.max_items` nodes, too
/// large.
fn summarize(doc: &Document, limits: &Limits) -> Result<(u32, u32, u32), Failure> {
    let root = doc
        .catalog()
        .and_then(|c| c.get(b"Pages"))
        .and_then(Object::as_reference)
        .map_err(|e| missing(format!("no page tree: {e}")))?;

    let mut stack: Vec<(ObjectId, u32, Inherited)> = vec![(root, 0, Inherited::default())];
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut pages: u64 = 0;
    let mut first: Option<(u32, u32)> = None;
    let mut nodes: u64 = 0;

    while let Some((id, depth, inherited)) = stack.pop() {
        if !seen.insert(id) {
            return Err(hostile(format!("page tree reaches object {} {} twice", id.0, id.1)));
        }
        nodes += 1;
        if nodes > limits.max_items {
            return Err(Failure::Hostile(ProbeError::TooLarge {
                what: "PDF page tree".into(),
                limit: limits.max_items,
            }));
        }
        let node =
            doc.get_dictionary(id).map_err(|e| missing(format!("page tree node {} {}: {e}", id.0, id.1)))?;
        let here = Inherited {
            media_box: rect(doc, node, b"MediaBox").or(inherited.media_box),
            crop_box: rect(doc, node, b"CropBox").or(inherited.crop_box),
            rotate: integer(doc, node, b"Rotate").or(inherited.rotate),
        };
        let is_tree_node = match node.get(b"Type").and_then(Object::as_name) {
            Ok(b"Pages") => true,
            Ok(b"Page") => false,
            _ => node.has(b"Kids"),
        };
        if !is_tree_node {
            pages += 1;
            if first.is_none() {
                first = Some(display_size(here, id).map_err(Failure::Missing)?);
            }
            continue;
        }
        if depth >= limits.max_nesting {
            return Err(hostile(format!("page tree nested deeper than {} levels", limits.max_nesting)));
        }
        let kids = node
            .get(b"Kids")
            .and_then(|k| doc.dereference(k))
            .and_then(|(_, k)| k.as_array())
            .map_err(|e| missing(format!("page tree node {} {} has no /Kids: {e}", id.0, id.1)))?;
        // Reversed, so the first kid is popped first and the first page is found first.
        for kid in kids.iter().rev() {
            let kid =
                kid.as_reference().map_err(|_| missing("a /Kids entry is not an indirect reference"))?;
            stack.push((kid, depth + 1, here));
        }
        if stack.len() as u64 > limits.max_items {
            return Err(Failure::Hostile(ProbeError::TooLarge {
                what: "PDF page tree".into(),
                limit: limits.max_items,
            }));
        }
    }

    let (width, height) = first.ok_or_else(|| missing("the page tree has no pages"))?;
    let pages = u32::try_from(pages).map_err(|_| {
        Failure::Hostile(ProbeError::TooLarge { what: format!("{pages} pages"), limit: u32::MAX.into() })
    })?;
    Ok((pages, width, height))
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

/// A rectangle `[x1 y1 x2 y2]`, directly or through references.
fn rect(doc: &Document, dict: &Dictionary, key: &[u8]) -> Option<[f64; 4]> {
    let (_, array) = doc.dereference(dict.get(key).ok()?).ok()?;
    let array = array.as_array().ok()?;
    if array.len() != 4 {
        return None;
    }
    let mut out = [0f64; 4];
    for (slot, item) in out.iter_mut().zip(array) {
        let (_, item) = doc.dereference(item).ok()?;
        *slot = match item {
            Object::Integer(i) => *i as f64,
            Object::Real(r) => f64::from(*r),
            _ => return None,
        };
    }
    Some(out)
}

fn integer(doc: &Document, dict: &Dictionary, key: &[u8]) -> Option<i64> {
    let (_, value) = doc.dereference(dict.get(key).ok()?).ok()?;
    match value {
        Object::Integer(i) => Some(*i),
        Object::Real(r) if r.fract() == 0.0 => Some(*r as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets").join(name)
    }

    fn probe_with(name: &str, limits: &Limits) -> Result<AssetMetadata> {
        let src = Source::open(&fixture(name))?;
        probe(&src, Format::Pdf, limits)
    }

    #[test]
    fn lopdf_rebuilds_wrong_xref_offsets_itself() {
        let bytes = std::fs::read(fixture("pdf/broken-xref-offsets.pdf")).unwrap();
        let doc = load(&bytes, &Limits::default(), false).unwrap();
        assert!(doc.xref_recovery.is_some(), "the xref was read as written");
        assert_eq!(summarize(&doc, &Limits::default()).unwrap(), (3, 612, 792));
    }

    #[test]
    fn stream_contents_are_not_kept() {
        let bytes = std::fs::read(fixture("pdf/plain-3-pages.pdf")).unwrap();
        let doc = load(&bytes, &Limits::default(), false).unwrap();
        assert!(doc.objects.values().all(|o| o.as_stream().is_err()));
    }

    #[test]
    fn file_larger_than_the_memory_bound_is_too_large() {
        // plain-3-pages.pdf is 3984 bytes; the bound is 3/4 of max_memory_bytes.
        let limits = Limits { max_memory_bytes: 5311, ..Limits::default() };
        let err = probe_with("pdf/plain-3-pages.pdf", &limits).unwrap_err();
        assert!(matches!(err, ProbeError::TooLarge { limit: 3983, .. }), "{err}");
        let limits = Limits { max_memory_bytes: 5312, ..Limits::default() };
        assert_eq!(probe_with("pdf/plain-3-pages.pdf", &limits).unwrap().page_count, Some(3));
    }

    #[test]
    fn page_tree_depth_follows_max_nesting() {
        // The first page of this file sits two levels below the root.
        let shallow = Limits { max_nesting: 1, ..Limits::default() };
        let err = probe_with("pdf/inherited-box-rotate.pdf", &shallow).unwrap_err();
        assert_eq!(err.code(), asset_core::ErrorCode::CorruptFile, "{err}");
        let enough = Limits { max_nesting: 2, ..Limits::default() };
        assert_eq!(probe_with("pdf/inherited-box-rotate.pdf", &enough).unwrap().page_count, Some(2));
    }

    #[test]
    fn page_tree_nodes_follow_max_items() {
        // Root plus three pages: four nodes.
        let few = Limits { max_items: 3, ..Limits::default() };
        let err = probe_with("pdf/plain-3-pages.pdf", &few).unwrap_err();
        assert!(matches!(err, ProbeError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn rotation_is_normalised_and_swaps_only_quarter_turns() {
        let page = |rotate| Inherited { media_box: Some([0.0, 0.0, 200.0, 100.0]), crop_box: None, rotate };
        assert_eq!(display_size(page(Some(-90)), (1, 0)).unwrap(), (100, 200));
        assert_eq!(display_size(page(Some(450)), (1, 0)).unwrap(), (100, 200));
        assert_eq!(display_size(page(Some(180)), (1, 0)).unwrap(), (200, 100));
        assert_eq!(display_size(page(None), (1, 0)).unwrap(), (200, 100));
        let huge = Inherited { media_box: Some([0.0, 0.0, 1e300, 1.0]), crop_box: None, rotate: None };
        assert!(display_size(huge, (1, 0)).is_err());
    }
}
