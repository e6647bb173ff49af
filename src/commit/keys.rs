//! A primary key in the form the commit works with: one integer column (Int64 or Int32) as an
//! `i64`, any other key as its bytes in Arrow's row format (ordered, self-delimiting). The
//! merge picks each key's last change by this form, and the key index holds keys in it.

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use arrow::row::{RowConverter, Rows, SortField};
use smallvec::SmallVec;

/// A key as bytes of Arrow's row format: up to 16 bytes inline.
pub type KeyBytes = SmallVec<[u8; 16]>;

/// How the keys of a table (or of a commit window) are formed, from the key columns' types.
pub struct KeyForm {
    types: Vec<DataType>,
    /// Arrow's row format, for any key but one integer column.
    converter: Option<RowConverter>,
}

impl KeyForm {
    /// The form for key columns of these types (in identifier order).
    pub fn new(types: &[DataType]) -> Result<Self, String> {
        let converter = if matches!(types, [DataType::Int64 | DataType::Int32]) {
            None
        } else {
            Some(
                RowConverter::new(types.iter().cloned().map(SortField::new).collect())
                    .map_err(|e| format!("primary key: {e}"))?,
            )
        };
        Ok(KeyForm {
            types: types.to_vec(),
            converter,
        })
    }

    /// The key columns' types, in identifier order.
    pub fn types(&self) -> &[DataType] {
        &self.types
    }

    pub fn is_long(&self) -> bool {
        self.converter.is_none()
    }

    /// The keys of `columns` (the key columns in identifier order). A column of another type
    /// than the form's (a promoted column in an older data file) is cast to it; an integer
    /// key is read only from an integer column.
    pub fn keys(&self, columns: &[ArrayRef]) -> Result<Keys, String> {
        if columns.len() != self.types.len() {
            return Err(format!(
                "{} key columns, not {}",
                columns.len(),
                self.types.len()
            ));
        }
        let Some(converter) = &self.converter else {
            let column = &columns[0];
            return match column.data_type() {
                DataType::Int64 => Ok(Keys::Long(column.as_primitive::<Int64Type>().clone())),
                DataType::Int32 => cast(column, &DataType::Int64)
                    .map(|long| Keys::Long(long.as_primitive::<Int64Type>().clone()))
                    .map_err(|e| format!("key column: {e}")),
                other => Err(format!("key column is {other}, not an integer")),
            };
        };
        let cast_columns = columns
            .iter()
            .zip(&self.types)
            .map(|(c, t)| {
                if c.data_type() == t {
                    Ok(c.clone())
                } else {
                    cast(c, t).map_err(|e| format!("key column as {t}: {e}"))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        converter
            .convert_columns(&cast_columns)
            .map(Keys::Bytes)
            .map_err(|e| format!("primary key: {e}"))
    }
}

/// The keys of a batch, in a [`KeyForm`].
pub enum Keys {
    Long(Int64Array),
    Bytes(Rows),
}

/// One key, in a [`KeyForm`].
#[derive(Clone, Copy)]
pub enum Key<'a> {
    Long(i64),
    Bytes(&'a [u8]),
}

impl Keys {
    pub fn len(&self) -> usize {
        match self {
            Keys::Long(a) => a.len(),
            Keys::Bytes(r) => r.num_rows(),
        }
    }

    pub fn get(&self, i: usize) -> Key<'_> {
        match self {
            Keys::Long(a) => Key::Long(a.value(i)),
            Keys::Bytes(r) => Key::Bytes(r.row(i).data()),
        }
    }

    /// The integer keys (none when the keys are not of the integer form).
    pub fn longs(&self) -> &[i64] {
        match self {
            Keys::Long(a) => a.values(),
            Keys::Bytes(_) => &[],
        }
    }

    /// The row-format keys (none when the keys are of the integer form).
    pub fn bytes(&self) -> impl Iterator<Item = &[u8]> {
        let rows = match self {
            Keys::Long(_) => None,
            Keys::Bytes(r) => Some(r.iter().map(|row| row.data())),
        };
        rows.into_iter().flatten()
    }
}

impl Key<'_> {
    /// The key as bytes, for the maps that hold either form.
    pub fn owned(self) -> KeyBytes {
        match self {
            Key::Long(v) => KeyBytes::from_slice(&v.to_be_bytes()),
            Key::Bytes(b) => KeyBytes::from_slice(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, StringArray};

    use super::*;

    #[test]
    fn one_integer_column_is_long_and_anything_else_is_bytes() {
        let long = KeyForm::new(&[DataType::Int32]).unwrap();
        assert!(long.is_long());
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![7, -1]));
        let keys = long.keys(std::slice::from_ref(&ints)).unwrap();
        assert_eq!(keys.longs(), &[7, -1]);
        assert_eq!(keys.bytes().count(), 0);
        let text: ArrayRef = Arc::new(StringArray::from(vec!["7"]));
        assert_eq!(
            long.keys(std::slice::from_ref(&text)).err().unwrap(),
            "key column is Utf8, not an integer"
        );

        // Two columns take the row format; a promoted column (Int32 in an older file, Int64
        // in the table) is cast, and the same key gives the same bytes either way.
        let pair = KeyForm::new(&[DataType::Int64, DataType::Utf8]).unwrap();
        assert!(!pair.is_long());
        let text: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
        let longs: ArrayRef = Arc::new(Int64Array::from(vec![7, -1]));
        let from_ints = pair.keys(&[ints, text.clone()]).unwrap();
        let from_longs = pair.keys(&[longs, text.clone()]).unwrap();
        assert_eq!(from_ints.len(), 2);
        assert!(from_ints.longs().is_empty());
        assert!(from_ints.bytes().eq(from_longs.bytes()));
        assert_ne!(from_ints.get(0).owned(), from_ints.get(1).owned());
        assert_eq!(pair.keys(&[text]).err().unwrap(), "1 key columns, not 2");
    }
}
