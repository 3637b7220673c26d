//! `participants.tsv` and `sessions.tsv`: tab-separated tables with a header row, `n/a` for
//! missing values, keyed by their first column (`participant_id`, `session_id`).

use std::path::{Path, PathBuf};

use super::BidsError;

/// A BIDS TSV table keyed by its first column.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    path: PathBuf,
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    /// Reads a table whose first column must be `key_column` (e.g. `participant_id`). Values are
    /// trimmed; `n/a` and empty cells become `None`. Rows with the wrong number of cells, duplicate
    /// keys and a missing key column are errors naming the file and line.
    pub fn read(path: &Path, key_column: &str) -> Result<Table, BidsError> {
        let bytes = super::read::read_bounded(path, super::read::MAX_TSV_BYTES, "TSV table")?;
        Table::parse(path, &bytes, key_column)
    }

    /// [`Table::read`] on bytes already read from `path` (named in errors).
    pub fn parse(path: &Path, bytes: &[u8], key_column: &str) -> Result<Table, BidsError> {
        let err = |reason: String| BidsError::Table {
            path: path.to_path_buf(),
            reason,
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b'\t')
            .has_headers(true)
            .flexible(false)
            .quoting(false)
            .from_reader(bytes);
        let columns: Vec<String> = reader
            .headers()
            .map_err(|e| err(format!("cannot read the header row: {e}")))?
            .iter()
            .map(|c| c.trim().trim_start_matches('\u{feff}').to_string())
            .collect();
        if columns.first().map(String::as_str) != Some(key_column) {
            let found = if columns.iter().any(|c| c == key_column) {
                format!("column '{key_column}' is not the first column")
            } else {
                format!("no '{key_column}' column (columns: {})", columns.join(", "))
            };
            return Err(err(format!(
                "{found}; the first column must be '{key_column}' with values like 'sub-01', tab-separated"
            )));
        }
        let mut rows: Vec<Vec<Option<String>>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, rec) in reader.records().enumerate() {
            let line = i + 2;
            let rec = rec.map_err(|e| match e.kind() {
                csv::ErrorKind::UnequalLengths { expected_len, len, .. } => err(format!(
                    "line {line} has {len} cells, the header has {expected_len}; separate cells with tabs and write n/a for missing values"
                )),
                _ => err(format!("line {line}: {e}")),
            })?;
            let row: Vec<Option<String>> = rec
                .iter()
                .map(|c| {
                    let c = c.trim();
                    (!c.is_empty() && c != "n/a").then(|| c.to_string())
                })
                .collect();
            if row.iter().all(Option::is_none) {
                continue;
            }
            let key = row[0]
                .clone()
                .ok_or_else(|| err(format!("line {line}: empty {key_column}")))?;
            if !seen.insert(key.clone()) {
                return Err(err(format!(
                    "line {line}: {key_column} '{key}' appears twice"
                )));
            }
            rows.push(row);
        }
        Ok(Table {
            path: path.to_path_buf(),
            columns,
            rows,
        })
    }

    /// The file the table came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Column names in file order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Key values (first column) in file order, e.g. `sub-01`.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().filter_map(|r| r[0].as_deref())
    }

    /// The cell in `column` for the row whose key is `key` (`None` when absent or `n/a`).
    pub fn get(&self, key: &str, column: &str) -> Option<&str> {
        let c = self.columns.iter().position(|x| x == column)?;
        self.rows
            .iter()
            .find(|r| r[0].as_deref() == Some(key))?
            .get(c)?
            .as_deref()
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the table has no data rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("participants.tsv");
        std::fs::write(&p, content).unwrap();
        (d, p)
    }

    #[test]
    fn reads_values_and_na() {
        let (_d, p) = write("participant_id\tsite\tage\nsub-01\tA\t30\nsub-02\tn/a\t41\n");
        let t = Table::read(&p, "participant_id").unwrap();
        assert_eq!(t.keys().collect::<Vec<_>>(), ["sub-01", "sub-02"]);
        assert_eq!(t.get("sub-01", "site"), Some("A"));
        assert_eq!(t.get("sub-02", "site"), None);
        assert_eq!(t.get("sub-02", "age"), Some("41"));
        assert_eq!(t.get("sub-03", "age"), None);
    }

    #[test]
    fn errors_name_the_problem() {
        let (_d, p) = write("subject\tsite\nsub-01\tA\n");
        let e = Table::read(&p, "participant_id").unwrap_err().to_string();
        assert!(
            e.contains("participants.tsv") && e.contains("no 'participant_id' column"),
            "{e}"
        );
        let (_d, p) = write("participant_id\tsite\nsub-01\tA\textra\n");
        let e = Table::read(&p, "participant_id").unwrap_err().to_string();
        assert!(e.contains("line 2 has 3 cells"), "{e}");
        let (_d, p) = write("participant_id\nsub-01\nsub-01\n");
        assert!(
            Table::read(&p, "participant_id")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }
}
