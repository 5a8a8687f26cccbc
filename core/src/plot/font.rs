//! Text: DejaVu Sans, embedded in the library, rasterized with `ab_glyph` (pure Rust).
//!
//! All text of the figures goes through [`draw_text`] rather than plotters' own text
//! path, whose `ab_glyph` renderer drops each glyph's left side bearing (uneven letter
//! spacing) and whose `ttf` renderer needs system font libraries. Glyphs are placed at
//! their exact advances with kerning and blended with their anti-aliased coverage.
//!
//! The font file and its license (Bitstream Vera / DejaVu: redistribution bundled with
//! software is allowed, the notice must be kept) live in `core/assets/fonts/`.

use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, OutlinedGlyph, PxScale, ScaleFont};
use plotters::style::text_anchor::{HPos, VPos};
use plotters::style::{Color, RGBColor};

use super::common::{Area, DrawResult};
use crate::error::{Error, Result};

/// DejaVu Sans 2.37, unmodified.
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();

fn font() -> Option<&'static FontRef<'static>> {
    FONT.get_or_init(|| FontRef::try_from_slice(DEJAVU_SANS).ok())
        .as_ref()
}

/// Check once that the embedded font parses (it always should).
pub(crate) fn ensure_loaded() -> Result<()> {
    font().map(|_| ()).ok_or_else(|| {
        Error::invalid("the font embedded for plots (DejaVu Sans) could not be parsed")
    })
}

/// Glyph outlines of one line of text, positioned with the top of the line box at
/// y = 0 and the pen starting at x = 0.
struct Layout {
    glyphs: Vec<OutlinedGlyph>,
    width: f32,
    height: f32,
}

/// Lay out `s` at `size` pixels per em.
fn layout(s: &str, size: f64) -> Layout {
    let Some(font) = font() else {
        return Layout {
            glyphs: Vec::new(),
            width: 0.0,
            height: 0.0,
        };
    };
    let upem = font.units_per_em().unwrap_or(2048.0);
    let scale = PxScale::from(size as f32 * font.height_unscaled() / upem);
    let sf = font.as_scaled(scale);
    let ascent = sf.ascent();
    let mut pen = 0.0f32;
    let mut prev = None;
    let mut glyphs = Vec::with_capacity(s.len());
    for c in s.chars() {
        let id = sf.glyph_id(c);
        if let Some(p) = prev {
            pen += sf.kern(p, id);
        }
        let glyph = id.with_scale_and_position(scale, point(pen, ascent));
        if let Some(outlined) = font.outline_glyph(glyph) {
            glyphs.push(outlined);
        }
        pen += sf.h_advance(id);
        prev = Some(id);
    }
    Layout {
        glyphs,
        width: pen,
        height: sf.height(),
    }
}

/// Width and height in pixels of the line box of `s` at `size` px per em.
pub(crate) fn text_size(s: &str, size: f64) -> (u32, u32) {
    let l = layout(s, size);
    (l.width.ceil() as u32, l.height.ceil() as u32)
}

/// `s`, shortened with an ellipsis to fit `max_px` pixels at `size`.
pub(crate) fn fit_text(s: &str, size: f64, max_px: u32) -> String {
    if text_size(s, size).0 <= max_px {
        return s.to_string();
    }
    let chars: Vec<char> = s.chars().collect();
    for keep in (0..chars.len()).rev() {
        let t: String = chars[..keep].iter().chain(['…'].iter()).collect();
        if text_size(&t, size).0 <= max_px {
            return t;
        }
    }
    String::new()
}

/// How a line of text sits relative to its anchor point.
#[derive(Clone, Copy)]
pub(crate) struct Anchor {
    /// Along the text: its start, middle or end at the anchor.
    pub h: HPos,
    /// Across the text: its top, middle or bottom (of the line box) at the anchor.
    pub v: VPos,
    /// Rotated a quarter turn counter-clockwise (reading upwards), as a y-axis title.
    pub vertical: bool,
}

impl Anchor {
    pub(crate) const fn new(h: HPos, v: VPos) -> Anchor {
        Anchor {
            h,
            v,
            vertical: false,
        }
    }
}

/// Draw `s` at `size` px per em in `color` on `area`, anchored at `at` (pixels of
/// `area`).
pub(crate) fn draw_text(
    area: &Area,
    s: &str,
    at: (i32, i32),
    size: f64,
    color: RGBColor,
    anchor: Anchor,
) -> DrawResult {
    let l = layout(s, size);
    let dx = match anchor.h {
        HPos::Left => 0.0,
        HPos::Center => -(l.width / 2.0).round(),
        HPos::Right => -l.width.round(),
    };
    let dy = match anchor.v {
        VPos::Top => 0.0,
        VPos::Center => -(l.height / 2.0).round(),
        VPos::Bottom => -l.height.round(),
    };
    let mut failure: Option<Box<dyn std::error::Error>> = None;
    for g in &l.glyphs {
        let b = g.px_bounds();
        g.draw(|gx, gy, c| {
            if c <= 0.0 || failure.is_some() {
                return;
            }
            let lx = (b.min.x + dx) as i32 + gx as i32;
            let ly = (b.min.y + dy) as i32 + gy as i32;
            let p = if anchor.vertical {
                (at.0 + ly, at.1 - lx)
            } else {
                (at.0 + lx, at.1 + ly)
            };
            if let Err(e) = area.draw_pixel(p, &color.mix(c.min(1.0) as f64)) {
                failure = Some(e.into());
            }
        });
        if let Some(e) = failure.take() {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn font_loads_and_measures() {
        ensure_loaded().unwrap();
        let (w1, h1) = text_size("0.143", 15.0);
        let (w2, h2) = text_size("0.143", 30.0);
        assert!((21..60).contains(&w1), "{w1}");
        assert!((15..=20).contains(&h1), "{h1}");
        assert!((w2 as i64 - 2 * w1 as i64).abs() <= 2 && h2 >= 2 * h1 - 2);
        assert_eq!(text_size("", 15.0).0, 0);
        assert_eq!(fit_text("short", 15.0, 200), "short");
        let cut = fit_text("a rather long label for a small tile", 15.0, 80);
        assert!(cut.ends_with('…') && text_size(&cut, 15.0).0 <= 80, "{cut}");
    }
}
