//! Producer ids that are never handed out twice, even across crashes: ids are reserved in blocks
//! whose upper end is made durable before any id of the block is used.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

const BLOCK: i64 = 1000;

pub struct ProducerIds {
    path: PathBuf,
    /// (next id to hand out, end of the durable reservation)
    range: Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub fn open(data_dir: &Path) -> std::io::Result<ProducerIds> {
        let path = data_dir.join("producer-ids");
        let reserved = match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<i64>().map_err(|error| {
                std::io::Error::other(format!("{} is unreadable: {error}", path.display()))
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => return Err(error),
        };
        let ids = ProducerIds {
            path,
            range: Mutex::new((reserved, reserved)),
        };
        Ok(ids)
    }

    pub fn next(&self) -> std::io::Result<i64> {
        let mut range = self.range.lock();
        if range.0 >= range.1 {
            let end = range.1 + BLOCK;
            let temporary = self.path.with_extension("tmp");
            let mut file = fs::File::create(&temporary)?;
            file.write_all(end.to_string().as_bytes())?;
            file.sync_all()?;
            fs::rename(&temporary, &self.path)?;
            fs::File::open(self.path.parent().expect("data dir"))?.sync_all()?;
            range.1 = end;
        }
        let id = range.0;
        range.0 += 1;
        Ok(id)
    }
}
