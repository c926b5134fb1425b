//! [`Problems`]: what validation found, collected so that every problem is reported at once,
//! each at its key path. Every section's validation writes into it.

use super::files::{check_readable, FileCheck};
use super::{BackoffConfig, BatchConfig, ConfigErrors, Problem};

/// Collects problems, one per key path, and what could not be checked here.
#[derive(Default)]
pub(super) struct Problems {
    problems: Vec<Problem>,
    unchecked: Vec<Problem>,
}

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Notes that the file at key `path` could not be checked by this process, and why.
    pub(super) fn not_checked(&mut self, path: impl Into<String>, why: impl Into<String>) {
        self.unchecked.push(Problem {
            path: path.into(),
            message: why.into(),
        });
    }

    /// Checks that the file at key `path` can be read (see [`check_readable`]).
    pub(super) fn readable_file(&mut self, file: &std::path::Path, path: impl Into<String>) {
        match check_readable(file) {
            FileCheck::Readable => {}
            FileCheck::Problem(why) => self.add(path, why),
            FileCheck::NotChecked(why) => self.not_checked(path, why),
        }
    }

    /// Every problem found, or else what could not be checked here.
    pub(super) fn finish(self) -> Result<Vec<Problem>, ConfigErrors> {
        if self.problems.is_empty() {
            Ok(self.unchecked)
        } else {
            Err(ConfigErrors(self.problems))
        }
    }

    pub(super) fn check(&mut self, ok: bool, path: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.add(path, message);
        }
    }

    /// A source's name: not empty, and not `taken` by another source of its kind (`what`).
    pub(super) fn source_name(&mut self, name: &str, taken: bool, path: &str, what: &str) {
        self.check(
            !name.trim().is_empty(),
            format!("{path}.name"),
            "must not be empty",
        );
        if taken {
            self.add(
                format!("{path}.name"),
                format!("`{name}` is used by another {what}"),
            );
        }
    }

    /// Tag names (of a subscription or a port) must not be empty.
    pub(super) fn tag_names(
        &mut self,
        tags: &std::collections::BTreeMap<String, String>,
        path: &str,
    ) {
        self.check(
            tags.keys().all(|k| !k.is_empty()),
            format!("{path}.tags"),
            "tag names must not be empty",
        );
    }

    pub(super) fn batch(&mut self, b: &BatchConfig, path: &str) {
        self.check(
            (1..=1_000_000).contains(&b.max_readings),
            format!("{path}.max_readings"),
            "must be between 1 and 1000000",
        );
        self.check(
            !b.max_age.is_zero(),
            format!("{path}.max_age"),
            "must be more than zero",
        );
    }

    pub(super) fn backoff(&mut self, b: &BackoffConfig, path: &str) {
        self.check(
            !b.initial.is_zero(),
            format!("{path}.initial"),
            "must be more than zero",
        );
        self.check(
            b.max >= b.initial,
            format!("{path}.max"),
            "must be at least `initial`",
        );
    }
}
