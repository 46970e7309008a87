//! Headers a guest passes to `publish`, `request` and `respond`, as NATS
//! carries them.

use super::generated::natsapp::handler::types::Error;
use async_nats::{HeaderMap, HeaderName, HeaderValue};

/// Builds a header map from guest pairs, rejecting what NATS cannot carry.
/// The guest's strings become the map's own: no copy.
pub(super) fn header_map(pairs: Vec<(String, String)>) -> Result<HeaderMap, Error> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        // The checks async-nats makes, done first so that the error names
        // the header and its value is taken without a copy.
        if name.contains(|c: char| !c.is_ascii_graphic() || c == ':') {
            return Err(Error::Invalid(format!(
                "header name {name:?}: printable ASCII without ':' only"
            )));
        }
        if value.contains(['\r', '\n']) {
            return Err(Error::Invalid(format!(
                "header {name:?} value: cannot contain '\\r' or '\\n'"
            )));
        }
        let n = HeaderName::try_from(name).map_err(|e| Error::Invalid(e.to_string()))?;
        map.append(n, HeaderValue::from(value));
    }
    Ok(map)
}
