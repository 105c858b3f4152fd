//! Every mail of a Maildir, indexed by recipient. [`crate::Maildir::to`] reads every file
//! on each call, fine for a few mails; a load of a thousand orders needs each file parsed
//! once: [`MailIndex::refresh`] only reads the files it has not seen yet.

use crate::Mail;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

pub struct MailIndex {
    root: PathBuf,
    seen: HashSet<PathBuf>,
    by_recipient: HashMap<String, Vec<Mail>>,
    total: usize,
}

impl MailIndex {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            seen: HashSet::new(),
            by_recipient: HashMap::new(),
            total: 0,
        }
    }

    /// Reads the files that arrived since the last call.
    pub fn refresh(&mut self) {
        let entries = ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.root.join(sub)).ok())
            .flatten()
            .filter_map(Result::ok);
        for entry in entries {
            let path = entry.path();
            if self.seen.contains(&path) {
                continue;
            }
            let Ok(raw) = std::fs::read(&path) else {
                continue; // moved between new/ and cur/: seen on the next refresh
            };
            self.seen.insert(path);
            if let Some(mail) = crate::mail::parse(&raw, false) {
                self.total += 1;
                for to in &mail.to {
                    self.by_recipient
                        .entry(to.to_ascii_lowercase())
                        .or_default()
                        .push(mail.clone());
                }
            }
        }
    }

    /// The mails to `recipient` seen so far.
    pub fn to(&self, recipient: &str) -> &[Mail] {
        self.by_recipient
            .get(&recipient.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }

    /// Mails seen so far.
    pub fn total(&self) -> usize {
        self.total
    }
}
