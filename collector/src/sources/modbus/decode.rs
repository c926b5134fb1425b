//! Field values from the registers (or bits) a request read: data type, byte and word
//! order, scale and offset.

use crate::config::{DataType, FieldSettings};
use crate::reading::{CompactString, FieldValue};

/// What one request read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// Registers, as the device sent them (each big-endian on the wire).
    Words(Vec<u16>),
    /// Coils or discrete inputs.
    Bits(Vec<bool>),
}

/// Why a field has no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A float that is NaN or infinite (a device's "no value"): no store accepts it.
    #[error("not a finite number")]
    NotFinite,
    /// A string that is not UTF-8.
    #[error("a string that is not UTF-8")]
    InvalidUtf8,
    /// The answer does not reach the field (cannot happen with a checked answer).
    #[error("the answer is too short")]
    Short,
}

impl DecodeError {
    /// The rejection reason it is counted under.
    pub fn reason(self) -> &'static str {
        match self {
            DecodeError::NotFinite => "not_finite",
            DecodeError::InvalidUtf8 => "invalid_utf8",
            DecodeError::Short => "short_answer",
        }
    }
}

/// The value of `field` in `data`, read from address `start` on.
///
/// # Errors
/// See [`DecodeError`].
pub fn decode(field: &FieldSettings, data: &Data, start: u16) -> Result<FieldValue, DecodeError> {
    let offset = usize::from(field.address.wrapping_sub(start));
    let size = usize::from(field.size);
    match data {
        Data::Bits(bits) => bits
            .get(offset)
            .map(|&b| FieldValue::Boolean(b))
            .ok_or(DecodeError::Short),
        Data::Words(words) => {
            let words = words.get(offset..offset + size).ok_or(DecodeError::Short)?;
            decode_words(field, words)
        }
    }
}

fn decode_words(field: &FieldSettings, words: &[u16]) -> Result<FieldValue, DecodeError> {
    let order = field.order;
    if field.data_type == DataType::String {
        let mut bytes: Vec<u8> = words
            .iter()
            .flat_map(|w| {
                let [hi, lo] = w.to_be_bytes();
                if order.bytes_swapped() {
                    [lo, hi]
                } else {
                    [hi, lo]
                }
            })
            .collect();
        // A C string: up to its first NUL; padding spaces dropped.
        if let Some(nul) = bytes.iter().position(|&b| b == 0) {
            bytes.truncate(nul);
        }
        while bytes.last() == Some(&b' ') {
            bytes.pop();
        }
        return String::from_utf8(bytes)
            .map(|s| FieldValue::String(CompactString::from(s)))
            .map_err(|_| DecodeError::InvalidUtf8);
    }
    // The value's bits, most significant first, whatever the order on the wire.
    let mut raw: u64 = 0;
    let mut push = |w: u16| {
        let w = if order.bytes_swapped() {
            w.swap_bytes()
        } else {
            w
        };
        raw = (raw << 16) | u64::from(w);
    };
    if order.words_swapped() {
        words.iter().rev().copied().for_each(&mut push);
    } else {
        words.iter().copied().for_each(&mut push);
    }
    let value = match field.data_type {
        DataType::Bool => {
            let bit = field.bit.unwrap_or(0);
            return Ok(FieldValue::Boolean(raw >> bit & 1 == 1));
        }
        // Truncations keep exactly the bits the type has.
        DataType::U16 => Number::Int(i64::from(raw as u16)),
        DataType::I16 => Number::Int(i64::from(raw as u16 as i16)),
        DataType::U32 => Number::Int(i64::from(raw as u32)),
        DataType::I32 => Number::Int(i64::from(raw as u32 as i32)),
        DataType::U64 => Number::Unsigned(raw),
        DataType::I64 => Number::Int(raw as i64),
        DataType::F32 => Number::Float(f64::from(f32::from_bits(raw as u32))),
        DataType::F64 => Number::Float(f64::from_bits(raw)),
        DataType::String => return Err(DecodeError::Short), // handled above
    };
    let value = match (field.scaling, value) {
        (None, Number::Int(v)) => return Ok(FieldValue::Integer(v)),
        (None, Number::Unsigned(v)) => return Ok(FieldValue::Unsigned(v)),
        (None, Number::Float(v)) => v,
        (Some((scale, offset)), n) => n.as_f64() * scale + offset,
    };
    if value.is_finite() {
        Ok(FieldValue::Float(value))
    } else {
        Err(DecodeError::NotFinite)
    }
}

enum Number {
    Int(i64),
    Unsigned(u64),
    Float(f64),
}

impl Number {
    fn as_f64(&self) -> f64 {
        match *self {
            Number::Int(v) => v as f64,
            Number::Unsigned(v) => v as f64,
            Number::Float(v) => v,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Order, RegisterKind};

    fn field(data_type: DataType, order: Order) -> FieldSettings {
        FieldSettings {
            name: "f".into(),
            register: RegisterKind::Holding,
            address: 10,
            data_type,
            order,
            bit: None,
            size: data_type.registers(),
            scaling: None,
            unit: None,
            interval: Duration::from_secs(1),
            report: None,
        }
    }

    /// The registers holding the big-endian bytes `be` in `order`.
    fn registers(be: &[u8], order: Order) -> Vec<u16> {
        let mut words: Vec<u16> = be
            .chunks(2)
            .map(|c| {
                let w = u16::from_be_bytes([c[0], c[1]]);
                if order.bytes_swapped() {
                    w.swap_bytes()
                } else {
                    w
                }
            })
            .collect();
        if order.words_swapped() {
            words.reverse();
        }
        words
    }

    fn get(data_type: DataType, order: Order, words: Vec<u16>) -> Result<FieldValue, DecodeError> {
        decode(&field(data_type, order), &Data::Words(words), 10)
    }

    #[test]
    fn the_four_orders_of_32_and_64_bit_values() {
        use Order::*;
        // 0x4148F5C3 is 12.56f32; ABCD = 41 48 F5 C3.
        for (order, words) in [
            (ABCD, vec![0x4148, 0xF5C3]),
            (CDAB, vec![0xF5C3, 0x4148]),
            (BADC, vec![0x4841, 0xC3F5]),
            (DCBA, vec![0xC3F5, 0x4841]),
        ] {
            assert_eq!(
                get(DataType::F32, order, words.clone()),
                Ok(FieldValue::Float(f64::from(12.56f32))),
                "{order}"
            );
            assert_eq!(
                get(DataType::U32, order, words),
                Ok(FieldValue::Integer(0x4148_F5C3)),
                "{order}"
            );
        }
        for order in [ABCD, CDAB, BADC, DCBA] {
            let v = -1234.5678e200f64;
            let words = registers(&v.to_be_bytes(), order);
            assert_eq!(get(DataType::F64, order, words), Ok(FieldValue::Float(v)));
            let v = -0x0102_0304_0506_0708i64;
            let words = registers(&v.to_be_bytes(), order);
            assert_eq!(get(DataType::I64, order, words), Ok(FieldValue::Integer(v)));
            let words = registers(&u64::MAX.to_be_bytes(), order);
            assert_eq!(
                get(DataType::U64, order, words),
                Ok(FieldValue::Unsigned(u64::MAX))
            );
            let words = registers(&(-2i32).to_be_bytes(), order);
            assert_eq!(
                get(DataType::I32, order, words),
                Ok(FieldValue::Integer(-2))
            );
        }
        // 16 bits: only the byte order matters.
        assert_eq!(
            get(DataType::I16, ABCD, vec![0xFFFE]),
            Ok(FieldValue::Integer(-2))
        );
        assert_eq!(
            get(DataType::I16, CDAB, vec![0xFFFE]),
            Ok(FieldValue::Integer(-2))
        );
        assert_eq!(
            get(DataType::U16, BADC, vec![0x3412]),
            Ok(FieldValue::Integer(0x1234))
        );
        assert_eq!(
            get(DataType::U16, DCBA, vec![0x3412]),
            Ok(FieldValue::Integer(0x1234))
        );
    }

    #[test]
    fn offsets_scaling_bits_and_strings() {
        let mut f = field(DataType::I16, Order::ABCD);
        f.address = 12;
        f.scaling = Some((0.1, -40.0));
        let data = Data::Words(vec![0, 0, 655, 0]);
        assert_eq!(
            decode(&f, &data, 10),
            Ok(FieldValue::Float(655.0 * 0.1 - 40.0))
        );
        f.address = 14;
        assert_eq!(decode(&f, &data, 10), Err(DecodeError::Short));

        let mut b = field(DataType::Bool, Order::ABCD);
        b.bit = Some(15);
        assert_eq!(get_field(&b, vec![0x8000]), FieldValue::Boolean(true));
        b.bit = Some(0);
        assert_eq!(get_field(&b, vec![0x8000]), FieldValue::Boolean(false));
        let mut coil = field(DataType::Bool, Order::ABCD);
        coil.register = RegisterKind::Coil;
        assert_eq!(
            decode(&coil, &Data::Bits(vec![false, true, false]), 9),
            Ok(FieldValue::Boolean(true))
        );

        let mut s = field(DataType::String, Order::ABCD);
        s.size = 4;
        let text = u16::from_be_bytes(*b"PM");
        let words = vec![
            text,
            u16::from_be_bytes(*b"53"),
            u16::from_be_bytes(*b"0 "),
            0,
        ];
        assert_eq!(
            get_field(&s, words.clone()),
            FieldValue::String("PM530".into())
        );
        s.order = Order::BADC;
        let swapped: Vec<u16> = words.iter().map(|w| w.swap_bytes()).collect();
        assert_eq!(get_field(&s, swapped), FieldValue::String("PM530".into()));
        assert_eq!(
            decode(&s, &Data::Words(vec![0xFF41, 0, 0, 0]), 10),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            get(DataType::F32, Order::ABCD, vec![0x7FC0, 0]),
            Err(DecodeError::NotFinite)
        );
    }

    fn get_field(f: &FieldSettings, words: Vec<u16>) -> FieldValue {
        decode(f, &Data::Words(words), f.address).unwrap()
    }
}
