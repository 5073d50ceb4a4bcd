//! The font of the charts' text: a TrueType file found on the system, registered with plotters once.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::style::FontStyle;

/// The family name the charts ask plotters for.
pub const FAMILY: &str = "sans-serif";
/// Where Debian's fonts-dejavu-core, fonts-liberation and fonts-freefont-ttf put a sans-serif face.
const CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];
/// The largest font file accepted, in bytes (DejaVu Sans is about 0.7 MB).
const MAX_FONT_BYTES: u64 = 32 * 1024 * 1024;

/// Proof that a font is registered, so charts can draw text.
#[derive(Debug, Clone)]
pub struct Font {
    pub path: PathBuf,
}

/// Registers the font at `path`, or the first of the usual system fonts
/// found; fails with what to install when there is none.
pub fn load(path: Option<&Path>) -> anyhow::Result<Font> {
    let path = match path {
        Some(path) => path.to_owned(),
        None => CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the charts need a TrueType font and none was found ({}); install one with \
                     `apt-get install fonts-dejavu-core` (scripts/bench.sh does), or pass --font PATH",
                    CANDIDATES.join(", ")
                )
            })?,
    };
    let size = std::fs::metadata(&path)
        .with_context(|| format!("--font: reading {}", path.display()))?
        .len();
    anyhow::ensure!(
        size <= MAX_FONT_BYTES,
        "--font: {} is {size} bytes, more than a font should be",
        path.display()
    );
    let bytes = std::fs::read(&path).with_context(|| format!("--font: reading {}", path.display()))?;
    // plotters keeps registered fonts for the life of the process; the
    // harness registers one, once, so leaking it is the intended lifetime.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("--font: {} is not a TrueType or OpenType font", path.display()))?;
    Ok(Font { path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_no_font_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("not-a-font.ttf");
        std::fs::write(&path, b"plain text").expect("write");
        let error = load(Some(&path)).unwrap_err().to_string();
        assert!(error.contains("is not a TrueType"), "{error}");
        let missing = load(Some(&dir.path().join("missing.ttf"))).unwrap_err();
        assert!(format!("{missing:#}").starts_with("--font"), "{missing:#}");
    }
}
