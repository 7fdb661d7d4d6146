// Copyright 2026 rtsup contributors
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! rtsup (vendored change 37): which of the fields that frame a message and decide its
//! connection's fate (`Content-Length`, `Transfer-Encoding`, `Connection`, `Upgrade`, and
//! since change 42 `Keep-Alive`) a header
//! may hold, noted as fields are added, so that looking for one of them in a header that
//! never had it costs a bit test instead of a hashed lookup. A proxied message is looked at
//! for these a dozen times (its framing on reading and on writing, keep-alive, upgrade), and
//! most hold none or one of them.

use http::header::{self, HeaderName};

/// `Keep-Alive`, which the http crate does not name (change 42: an upstream response's is
/// looked for on every response, and most have none). Public as [`crate::KEEP_ALIVE`], the
/// name pingora-core looks up.
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// The framing fields a header may hold: a clear bit means the field is absent; a set one
/// means it was added (and may have been removed since). Names outside the four are not
/// tracked, and may always be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FramingFields(u8);

impl FramingFields {
    /// A header with no field yet.
    pub(crate) const NONE: Self = Self(0);
    /// A header built from parts whose fields were not noted: any may be there.
    pub(crate) const ANY: Self = Self(u8::MAX);

    #[inline]
    fn bit(name: &HeaderName) -> u8 {
        if *name == header::CONTENT_LENGTH {
            1
        } else if *name == header::TRANSFER_ENCODING {
            2
        } else if *name == header::CONNECTION {
            4
        } else if *name == header::UPGRADE {
            8
        } else if *name == KEEP_ALIVE {
            16
        } else {
            0
        }
    }

    /// Note a field added under `name`.
    #[inline]
    pub(crate) fn note(&mut self, name: &HeaderName) {
        self.0 |= Self::bit(name);
    }

    /// Whether the header may hold a field named `name`: false only for one of the four
    /// never added.
    #[inline]
    pub(crate) fn may_hold(self, name: &HeaderName) -> bool {
        let bit = Self::bit(name);
        bit == 0 || self.0 & bit != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACKED: [HeaderName; 5] = [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::UPGRADE,
        KEEP_ALIVE,
    ];

    #[test]
    fn each_tracked_field_is_absent_until_noted_and_others_may_always_be_there() {
        for (i, noted) in TRACKED.iter().enumerate() {
            let mut fields = FramingFields::NONE;
            fields.note(&header::HOST);
            fields.note(&HeaderName::from_static("x-content-length"));
            for name in &TRACKED {
                assert!(!fields.may_hold(name), "{name} before any was noted");
            }
            fields.note(noted);
            for (j, name) in TRACKED.iter().enumerate() {
                assert_eq!(fields.may_hold(name), i == j, "{name} after {noted}");
            }
            assert!(fields.may_hold(&header::HOST));
            assert!(fields.may_hold(&HeaderName::from_static("x-forwarded-for")));
            assert!(FramingFields::NONE.may_hold(&header::DATE));
        }
        for name in &TRACKED {
            assert!(FramingFields::ANY.may_hold(name));
        }
    }

    #[test]
    fn a_tracked_name_parsed_in_any_case_is_the_tracked_field() {
        for spelling in [
            "Content-Length",
            "TRANSFER-ENCODING",
            "connection",
            "UpGrade",
            "Keep-Alive",
        ] {
            let mut fields = FramingFields::NONE;
            fields.note(&HeaderName::from_bytes(spelling.as_bytes()).unwrap());
            assert_eq!(
                TRACKED.iter().filter(|name| fields.may_hold(name)).count(),
                1,
                "{spelling}"
            );
        }
    }
}
