//! PNG copies of the inspector's SVG pictures (`cargo run -- inspect --png OUT`), for
//! viewers that do not show SVG. Rendered by `resvg` with the machine's fonts (DejaVu,
//! Debian's `fonts-dejavu-core`, which `.ci/setup` installs), at [`SCALE`]× the SVG's
//! size. Each PNG carries, in a `tEXt` chunk, the CRC-32 of the SVG it was drawn from
//! ([`source_crc`]), so a test can tell a PNG that has fallen behind its SVG.

use resvg::tiny_skia::{Pixmap, Transform};
use resvg::usvg;

/// Pixels per SVG unit: the labels are 10–11 px in the SVG, legible at twice that.
pub const SCALE: f32 = 2.0;

/// The `tEXt` keyword of the source note (a keyword the PNG specification defines).
const KEYWORD: &str = "Source";

/// Render `svg` to PNG bytes. Fails when the SVG does not parse or when the machine has
/// no font for the labels (they would silently vanish).
pub fn render(svg: &str) -> Result<Vec<u8>, String> {
    let mut opt = usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    // The pictures ask for `monospace`: take the first monospaced family there is.
    let mono = db
        .faces()
        .find(|f| f.monospaced)
        .and_then(|f| f.families.first().map(|(name, _)| name.clone()));
    match mono {
        Some(name) => db.set_monospace_family(name),
        None => {
            return Err(
                "no monospaced font on this machine for the picture's labels \
                        (install fonts-dejavu-core: bash .ci/setup)"
                    .into(),
            );
        }
    }
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| format!("SVG: {e}"))?;
    let size = tree
        .size()
        .to_int_size()
        .scale_by(SCALE)
        .ok_or("SVG: bad size")?;
    let mut pixmap = Pixmap::new(size.width(), size.height()).ok_or("SVG: empty picture")?;
    resvg::render(
        &tree,
        Transform::from_scale(SCALE, SCALE),
        &mut pixmap.as_mut(),
    );
    let png = pixmap.encode_png().map_err(|e| format!("PNG: {e}"))?;
    Ok(with_text(
        &png,
        KEYWORD,
        &format!("svg-crc32={:08x}", crc32(svg.as_bytes())),
    ))
}

/// The CRC-32 of the SVG a PNG made by [`render`] was drawn from.
pub fn source_crc(png: &[u8]) -> Option<u32> {
    let prefix = format!("{KEYWORD}\0svg-crc32=");
    chunks(png)
        .filter(|(ty, _)| ty == b"tEXt")
        .find_map(|(_, data)| {
            let text = std::str::from_utf8(data).ok()?;
            u32::from_str_radix(text.strip_prefix(&prefix)?, 16).ok()
        })
}

/// The size in pixels of a PNG (from its IHDR chunk).
pub fn dimensions(png: &[u8]) -> Option<(u32, u32)> {
    let (ty, d) = chunks(png).next()?;
    if ty != *b"IHDR" || d.len() < 8 {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&d[0..4]), be(&d[4..8])))
}

/// Decode a PNG into RGBA pixels (premultiplied), with its width and height.
pub fn pixels(png: &[u8]) -> Option<(u32, u32, Vec<u8>)> {
    let p = Pixmap::decode_png(png).ok()?;
    Some((p.width(), p.height(), p.data().to_vec()))
}

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// The chunks of a PNG as (type, data); stops at the first malformed one.
fn chunks(png: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut rest = png.strip_prefix(&SIGNATURE[..]).unwrap_or(&[]);
    std::iter::from_fn(move || {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let ty: [u8; 4] = rest.get(4..8)?.try_into().ok()?;
        let data = rest.get(8..8 + len)?;
        rest = rest.get(8 + len + 4..)?;
        Some((ty, data))
    })
}

/// `png` with a `tEXt` chunk `keyword\0text` right after its IHDR chunk.
fn with_text(png: &[u8], keyword: &str, text: &str) -> Vec<u8> {
    // Signature (8) + IHDR: length (4), type (4), 13 bytes of data, CRC (4).
    let at = 8 + 4 + 4 + 13 + 4;
    let mut data = keyword.as_bytes().to_vec();
    data.push(0);
    data.extend_from_slice(text.as_bytes());
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(b"tEXt");
    chunk.extend_from_slice(&data);
    chunk.extend_from_slice(&crc32(&chunk[4..]).to_be_bytes());
    let mut out = png[..at].to_vec();
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&png[at..]);
    out
}

/// CRC-32 as PNG (and zlib) define it: reflected polynomial 0xEDB88320, initial value
/// and final xor all ones.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_png_one() {
        // The CRC of the IEND chunk's type, as every PNG ends with it.
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_rendered_picture_names_its_source_and_has_its_size() {
        let svg = r##"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20" font-family="monospace"><rect width="100%" height="100%" fill="#fff"/><text x="2" y="14" font-size="11">ab</text></svg>"##;
        let png = render(svg).unwrap();
        assert_eq!(source_crc(&png), Some(crc32(svg.as_bytes())));
        assert_eq!(dimensions(&png), Some((80, 40)));
        let (w, h, px) = pixels(&png).unwrap();
        assert_eq!((w, h), (80, 40));
        // The text is drawn (some dark pixels), on white.
        assert!(px.chunks(4).any(|p| p[0] < 100), "no text drawn");
        assert!(px.chunks(4).filter(|p| p[0] == 255).count() > px.len() / 8);
        // Another SVG is another source; a truncated file has none.
        assert_ne!(source_crc(&png), Some(crc32(b"<svg/>")));
        assert_eq!(source_crc(&png[..40]), None);
        assert!(render("<svg").is_err());
    }
}
