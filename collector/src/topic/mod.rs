//! MQTT topics as the configuration writes them: the templates a subscription reads tags
//! from ([`TopicTemplate`], for the MQTT source) and the patterns a reading is published to
//! ([`TopicPattern`], for the MQTT sink). Parsed once, at validation, so that a bad topic is
//! a configuration error with its key path; they depend on nothing but [`crate::reading`].

mod pattern;
mod template;

pub use pattern::{TopicPattern, MISSING};
pub use template::{TopicMatch, TopicTemplate};
