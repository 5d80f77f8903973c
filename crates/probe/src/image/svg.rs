//! SVG: the root element's `width`/`height` when both are absolute pixel lengths (a
//! number, optionally `px`), else the `viewBox` size; rounded. Only the prolog and the
//! root start tag are read, never the drawing.

use std::io::BufRead;

use asset_core::Limits;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

use crate::{ProbeError, Result};

const NAME: &str = "SVG";
/// The most bytes read looking for the root start tag (a long DOCTYPE subset or
/// comment header may precede it).
const MAX_PROLOG_BYTES: u64 = 1024 * 1024;

/// Display size in pixels, or `None` when the file gives no absolute size (percentages,
/// other units without a viewBox, or nothing at all).
pub(super) fn dimensions<R: BufRead>(r: R, limits: &Limits) -> Result<Option<(u32, u32)>> {
    let mut xml = quick_xml::Reader::from_reader(r.take(MAX_PROLOG_BYTES.min(limits.max_memory_bytes)));
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match xml.read_event_into(&mut buf) {
            Ok(Event::Start(root) | Event::Empty(root)) => {
                if root.local_name().as_ref() != "svg" {
                    return Err(ProbeError::corrupt(NAME, "the root element is not <svg>"));
                }
                return root_dimensions(&root);
            }
            Ok(Event::Eof) => return Err(ProbeError::truncated(NAME, "no root element")),
            Ok(_) => {}
            Err(e) => return Err(ProbeError::corrupt(NAME, e)),
        }
    }
}

fn root_dimensions(root: &BytesStart<'_>) -> Result<Option<(u32, u32)>> {
    let (mut width, mut height, mut view_box) = (None, None, None);
    for attr in root.attributes() {
        let attr = attr.map_err(|e| ProbeError::corrupt(NAME, e))?;
        // An entity reference is never expanded (a DTD's entities can nest into a
        // billion bytes): a value holding one is unknown, as if absent.
        let Ok(value) = attr.normalized_value(XmlVersion::Implicit1_0) else { continue };
        match attr.key.local_name().as_ref() {
            "width" => width = Some(value.into_owned()),
            "height" => height = Some(value.into_owned()),
            "viewBox" => view_box = Some(value.into_owned()),
            _ => {}
        }
    }
    let absolute = width.as_deref().and_then(px_length).zip(height.as_deref().and_then(px_length));
    Ok(absolute.or_else(|| view_box.as_deref().and_then(view_box_size)))
}

/// A length in user units: a positive number, optionally followed by `px`.
fn px_length(s: &str) -> Option<u32> {
    let s = s.trim();
    let number = s.strip_suffix("px").unwrap_or(s).trim_end();
    to_pixels(number.parse().ok()?)
}

/// The width and height of `viewBox="min-x min-y width height"` (whitespace and/or
/// comma separated).
fn view_box_size(s: &str) -> Option<(u32, u32)> {
    let parts: Vec<&str> =
        s.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [_, _, w, h] => Some((to_pixels(w.parse().ok()?)?, to_pixels(h.parse().ok()?)?)),
        _ => None,
    }
}

fn to_pixels(v: f64) -> Option<u32> {
    let rounded = v.round();
    (v.is_finite() && v > 0.0 && rounded >= 1.0 && rounded <= f64::from(u32::MAX)).then_some(rounded as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(svg: &str) -> Result<Option<(u32, u32)>> {
        dimensions(svg.as_bytes(), &Limits::default())
    }

    #[test]
    fn px_and_unitless_are_rounded() {
        assert_eq!(dims(r#"<svg width="120.4px" height="60.5px"/>"#).unwrap(), Some((120, 61)));
        assert_eq!(dims(r#"<svg height=" 48 " width="64"></svg>"#).unwrap(), Some((64, 48)));
        assert_eq!(dims(r#"<svg width="1e2" height="2.5E1"/>"#).unwrap(), Some((100, 25)));
    }

    #[test]
    fn view_box_only() {
        assert_eq!(dims(r#"<svg viewBox="-10 -10 300.6 150.2"/>"#).unwrap(), Some((301, 150)));
        assert_eq!(dims(r#"<svg viewBox="0,0, 20,10"/>"#).unwrap(), Some((20, 10)));
    }

    #[test]
    fn other_units_fall_back_to_the_view_box() {
        let svg = r#"<svg width="210mm" height="297mm" viewBox="0 0 210 297"/>"#;
        assert_eq!(dims(svg).unwrap(), Some((210, 297)));
        let svg = r#"<svg width="100" height="50%" viewBox="0 0 30 20"/>"#;
        assert_eq!(dims(svg).unwrap(), Some((30, 20)));
    }

    #[test]
    fn percent_or_nothing_gives_no_size() {
        assert_eq!(dims(r#"<svg width="100%" height="100%"/>"#).unwrap(), None);
        assert_eq!(dims(r#"<svg width="10cm" height="5cm"/>"#).unwrap(), None);
        assert_eq!(dims(r#"<svg/>"#).unwrap(), None);
        assert_eq!(dims(r#"<svg width="0" height="10" viewBox="0 0 0 0"/>"#).unwrap(), None);
        assert_eq!(dims(r#"<svg viewBox="0 0 10"/>"#).unwrap(), None);
    }

    #[test]
    fn prolog_is_skipped_and_namespaced_root_accepted() {
        let svg = "<?xml version=\"1.0\"?>\n<!-- c -->\n<!DOCTYPE svg [<!ENTITY a \"b\">]>\n\
                   <svg:svg xmlns:svg=\"http://www.w3.org/2000/svg\" width=\"5\" height=\"6\"/>";
        assert_eq!(dims(svg).unwrap(), Some((5, 6)));
    }

    #[test]
    fn internal_dtd_entities_are_never_expanded() {
        // Billion laughs: 10^9 "lol"s if expanded. The width is an entity: unknown, so
        // the viewBox gives the size.
        let mut dtd = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE svg [\n<!ENTITY lol \"lol\">\n");
        for i in 1..=9 {
            let prev = if i == 1 { "lol".to_string() } else { format!("lol{}", i - 1) };
            dtd += &format!("<!ENTITY lol{i} \"{}\">\n", format!("&{prev};").repeat(10));
        }
        dtd += "]>\n<svg width=\"&lol9;\" height=\"20\" viewBox=\"0 0 30 20\"><text>&lol9;</text></svg>";
        let tight = Limits { max_memory_bytes: 64 * 1024, ..Limits::default() };
        assert_eq!(dimensions(dtd.as_bytes(), &tight).unwrap(), Some((30, 20)));
        let svg = "<!DOCTYPE svg [<!ENTITY w \"50\">]><svg width=\"&w;\" height=\"&w;\"/>";
        assert_eq!(dims(svg).unwrap(), None);
    }

    #[test]
    fn cut_before_the_root_is_truncated() {
        assert_eq!(dims("<?xml version=\"1.0\"?>\n<!-- c -->").unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn cut_inside_the_root_tag_is_an_error() {
        assert!(dims(r#"<svg width="10" hei"#).is_err());
    }
}
