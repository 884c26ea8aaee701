//! Bounds on what a ZIP file (a workbook, a file package) unpacks to, checked from its central
//! directory before anything is decompressed. The zip crate reads no entry past the size its
//! header declares, so the declared total bounds what a reader (calamine included) can be made
//! to hold: a zip bomb is refused, not inflated. Entry names that climb out of the archive
//! (`../x`, `/etc/x`) are refused too, though nothing here is ever extracted to disk.

use std::io::{Read, Seek};
use std::path::Path;

use anyhow::Context as _;

/// Most bytes a workbook or package may unpack to. A 100,000-row monthly report unpacks to
/// about 60 MB.
pub const MAX_UNZIPPED_BYTES: u64 = 256 << 20;
/// Most entries in one archive (a workbook has a few dozen).
pub const MAX_ENTRIES: usize = 10_000;

/// Checks an open archive.
pub fn check_archive<R: Read + Seek>(zip: &mut zip::ZipArchive<R>, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(zip.len() <= MAX_ENTRIES, "{what} holds {} entries; at most {MAX_ENTRIES} are read", zip.len());
    let mut total = 0u64;
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).with_context(|| format!("{what}: entry {i}"))?;
        anyhow::ensure!(
            entry.enclosed_name().is_some(),
            "{what}: entry {:?} names a path outside the archive",
            entry.name()
        );
        total = total.saturating_add(entry.size());
        anyhow::ensure!(
            total <= MAX_UNZIPPED_BYTES,
            "{what} unpacks to more than {MAX_UNZIPPED_BYTES} bytes; split it, or look for a damaged or hostile file"
        );
    }
    Ok(())
}

/// Checks the archive at `path`.
pub fn check_file(path: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let what = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut zip = zip::ZipArchive::new(file).with_context(|| format!("{what} is not a readable ZIP file (.xlsx)"))?;
    check_archive(&mut zip, &what)
}

/// Checks an archive held in memory.
pub fn check_bytes(bytes: &[u8], what: &str) -> anyhow::Result<()> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .with_context(|| format!("{what} is not a readable ZIP file (.xlsx)"))?;
    check_archive(&mut zip, what)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn archive(entries: &[(&str, usize)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, size) in entries {
            zip.start_file(*name, options).expect("entry");
            zip.write_all(&vec![0u8; *size]).expect("write");
        }
        zip.finish().expect("finish").into_inner()
    }

    #[test]
    fn a_zip_bomb_and_a_climbing_name_are_refused_before_anything_is_unpacked() {
        check_bytes(&archive(&[("xl/workbook.xml", 1000), ("xl/sheet1.xml", 1 << 20)]), "ok.xlsx").expect("fine");
        // 300 MiB of zeros deflate to about 300 KB.
        let bomb = archive(&[("xl/sharedStrings.xml", 300 << 20)]);
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let e = check_bytes(&bomb, "bomb.xlsx").expect_err("refused").to_string();
        assert!(e.contains("unpacks to more than"), "{e}");
        let e = check_bytes(&archive(&[("../../etc/cron.d/x", 10)]), "climb.zip").expect_err("refused").to_string();
        assert!(e.contains("outside the archive"), "{e}");
        assert!(check_bytes(b"not a zip", "x.xlsx").is_err());
    }
}
