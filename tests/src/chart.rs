//! A small PNG bar chart for the benchmark: groups of horizontal bars (one
//! per path) of a ratio to the baseline, with a line at 1.0. Text is drawn
//! with ab_glyph from a system TTF; pixels are encoded with png.

use std::path::Path;

use ab_glyph::{Font as _, FontRef, PxScale, ScaleFont as _};
use anyhow::{Context as _, Result};

pub struct Bars {
    pub title: String,
    pub subtitle: String,
    /// One group per figure (e.g. "iperf3 TCP 1 stream").
    pub groups: Vec<String>,
    /// One series per path (e.g. "native XDP").
    pub series: Vec<String>,
    /// values[group][series]: ratio to the baseline, None when not measured.
    pub values: Vec<Vec<Option<f64>>>,
}

const PALETTE: [[u8; 3]; 8] = [
    [120, 120, 120],
    [170, 170, 170],
    [31, 119, 180],
    [44, 160, 44],
    [255, 127, 14],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
];

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            px: vec![255; w * h * 3],
        }
    }

    fn rect(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, c: [u8; 3]) {
        for y in y0.min(self.h)..y1.min(self.h) {
            for x in x0.min(self.w)..x1.min(self.w) {
                let i = (y * self.w + x) * 3;
                self.px[i..i + 3].copy_from_slice(&c);
            }
        }
    }

    fn text(&mut self, font: &FontRef, x: f32, y: f32, size: f32, s: &str, c: [u8; 3]) -> f32 {
        let sf = font.as_scaled(PxScale::from(size));
        let mut pen = x;
        for ch in s.chars() {
            let id = sf.glyph_id(ch);
            let g = id.with_scale_and_position(size, ab_glyph::point(pen, y + sf.ascent()));
            pen += sf.h_advance(id);
            if let Some(o) = font.outline_glyph(g) {
                let b = o.px_bounds();
                o.draw(|gx, gy, cov| {
                    let (px, py) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
                    if px < 0 || py < 0 || px as usize >= self.w || py as usize >= self.h {
                        return;
                    }
                    let i = (py as usize * self.w + px as usize) * 3;
                    for (k, &ck) in c.iter().enumerate() {
                        let bg = self.px[i + k] as f32;
                        self.px[i + k] = (bg + (ck as f32 - bg) * cov).round() as u8;
                    }
                });
            }
        }
        pen - x
    }
}

/// Renders `b` to a PNG at `out`, with the TTF at `font_path`.
pub fn render_png(b: &Bars, font_path: &Path, out: &Path) -> Result<()> {
    let bytes = std::fs::read(font_path)
        .with_context(|| format!("reading font {}", font_path.display()))?;
    let font = FontRef::try_from_slice(&bytes).context("parsing the font")?;
    let (bar_h, gap) = (16usize, 22usize);
    let group_h = b.series.len() * bar_h + gap;
    let (left, top, w) = (300usize, 110usize, 1300usize);
    let h = top + b.groups.len() * group_h + 20;
    let mut c = Canvas::new(w, h);
    c.text(&font, 20.0, 14.0, 24.0, &b.title, [0, 0, 0]);
    c.text(&font, 20.0, 46.0, 15.0, &b.subtitle, [60, 60, 60]);
    // Legend.
    let mut lx = 20.0;
    for (i, s) in b.series.iter().enumerate() {
        c.rect(
            lx as usize,
            76,
            lx as usize + 14,
            90,
            PALETTE[i % PALETTE.len()],
        );
        lx += 20.0 + c.text(&font, lx + 18.0, 74.0, 14.0, s, [0, 0, 0]) + 16.0;
    }
    let max = b
        .values
        .iter()
        .flatten()
        .flatten()
        .fold(1.2f64, |m, &v| m.max(v))
        .min(4.0)
        * 1.1;
    let plot_w = (w - left - 90) as f64;
    let xof = |v: f64| left + (v.min(max) / max * plot_w) as usize;
    for (gi, g) in b.groups.iter().enumerate() {
        let y0 = top + gi * group_h;
        c.text(
            &font,
            20.0,
            y0 as f32 + (b.series.len() * bar_h) as f32 / 2.0 - 9.0,
            15.0,
            g,
            [0, 0, 0],
        );
        for (si, v) in b.values[gi].iter().enumerate() {
            let y = y0 + si * bar_h;
            match v {
                Some(v) => {
                    c.rect(
                        left,
                        y + 2,
                        xof(*v),
                        y + bar_h - 2,
                        PALETTE[si % PALETTE.len()],
                    );
                    c.text(
                        &font,
                        xof(*v) as f32 + 6.0,
                        y as f32,
                        12.0,
                        &format!("{v:.2}x"),
                        [30, 30, 30],
                    );
                }
                None => {
                    c.text(
                        &font,
                        left as f32 + 4.0,
                        y as f32,
                        12.0,
                        "n/a",
                        [150, 150, 150],
                    );
                }
            }
        }
    }
    // The baseline (1.0x) as a thin line across all groups.
    let x1 = xof(1.0);
    c.rect(x1, top - 6, x1 + 2, h - 10, [0, 0, 0]);
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&c.px)?;
    Ok(())
}
