//! Small serde helpers shared by the wire types (crate-private).

use serde::{Deserialize, Deserializer};

/// Deserialises `null` as `T::default()`.
///
/// The reference platform is written in Go, which encodes nil maps and slices as
/// `null` whenever a field lacks `omitempty`; we read those as empty.
pub(crate) fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}
