//! What parsing cannot check: the places on disk the configuration names.

use super::{Config, ConfigError, locate};

impl Config {
    /// Checks the directories and files the configuration names. Run before anything is
    /// attached. `text` is the file's text (for the error's line and column).
    pub fn check_paths(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let banyandb = &self.export.banyandb;
        if banyandb.enabled
            && let Err(err) = crate::export::banyandb::queue::Spool::check_dir(&banyandb.spool.dir)
        {
            let key = "export.banyandb.spool.dir";
            let (line, column) = locate(text, key).unwrap_or((0, 0));
            return Err(ConfigError::Invalid {
                file: file.to_owned(),
                line,
                column,
                key: key.to_owned(),
                message: format!("{}: {err}", banyandb.spool.dir.display()),
            });
        }
        Ok(())
    }
}
