//! The slave's side of the protocol: read requests (function codes 1 to 4) answered from a
//! device's tables, anything else refused with exception 1; the RTU checksum.

use std::collections::BTreeMap;

/// A device's tables, borrowed.
pub(crate) struct Tables<'a> {
    pub(crate) coils: &'a BTreeMap<u16, bool>,
    pub(crate) discrete: &'a BTreeMap<u16, bool>,
    pub(crate) input: &'a BTreeMap<u16, u16>,
    pub(crate) holding: &'a BTreeMap<u16, u16>,
    pub(crate) strict: bool,
}

/// The CRC-16 of Modbus RTU (polynomial 0xA001 reflected, initial 0xFFFF), sent low byte
/// first.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// `address`, `pdu` and their CRC: an RTU frame.
pub(crate) fn rtu_frame(address: u8, pdu: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(pdu.len() + 3);
    frame.push(address);
    frame.extend_from_slice(pdu);
    let crc = crc16(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

/// The length of the RTU request frame starting `buf` (address, PDU, CRC), once enough of it
/// is there to tell; `None` for a function code whose length is unknown here.
pub(crate) fn rtu_request_len(buf: &[u8]) -> Option<usize> {
    match *buf.get(1)? {
        1..=6 => Some(8),
        15 | 16 => buf.get(6).map(|&n| 9 + usize::from(n)),
        _ => None,
    }
}

/// The answer PDU to request `pdu`.
pub(crate) fn respond(t: &Tables<'_>, pdu: &[u8]) -> Vec<u8> {
    let fc = pdu.first().copied().unwrap_or(0);
    let exception = |code: u8| vec![fc | 0x80, code];
    let [fc @ 1..=4, a, b, c, d] = *pdu else {
        return exception(1);
    };
    let start = u16::from_be_bytes([a, b]);
    let count = u16::from_be_bytes([c, d]);
    let bits = fc <= 2;
    let limit = if bits { 2000 } else { 125 };
    if count == 0 || count > limit {
        return exception(3);
    }
    if u32::from(start) + u32::from(count) > 65_536 {
        return exception(2);
    }
    let addresses = (0..count).map(|i| start + i);
    if bits {
        let table = if fc == 1 { t.coils } else { t.discrete };
        let mut values = Vec::with_capacity(usize::from(count));
        for a in addresses {
            match table.get(&a) {
                Some(&v) => values.push(v),
                None if t.strict => return exception(2),
                None => values.push(false),
            }
        }
        let mut out = vec![fc, usize::from(count).div_ceil(8) as u8];
        for chunk in values.chunks(8) {
            let byte = chunk
                .iter()
                .enumerate()
                .fold(0u8, |acc, (i, &v)| acc | (u8::from(v) << i));
            out.push(byte);
        }
        out
    } else {
        let table = if fc == 3 { t.holding } else { t.input };
        let mut out = vec![fc, (2 * count) as u8];
        for a in addresses {
            match table.get(&a) {
                Some(&v) => out.extend_from_slice(&v.to_be_bytes()),
                None if t.strict => return exception(2),
                None => out.extend_from_slice(&[0, 0]),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_the_specification_example() {
        // Read 2 holding registers from 0x006B of unit 0x11: CRC 0x8776, sent 76 87.
        let frame = rtu_frame(0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03]);
        assert_eq!(frame, vec![0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87]);
        assert_eq!(crc16(&frame), 0, "a frame with its CRC checks to zero");
    }

    #[test]
    fn bits_are_packed_low_bit_first() {
        let coils: BTreeMap<u16, bool> = (0..10).map(|i| (i, i % 3 == 0)).collect();
        let empty = BTreeMap::new();
        let t = Tables {
            coils: &coils,
            discrete: &BTreeMap::new(),
            input: &empty,
            holding: &empty,
            strict: true,
        };
        assert_eq!(
            respond(&t, &[1, 0, 0, 0, 10]),
            vec![1, 2, 0b0100_1001, 0b10]
        );
        assert_eq!(respond(&t, &[1, 0, 5, 0, 10]), vec![0x81, 2]);
        assert_eq!(respond(&t, &[3, 0, 0, 0, 126]), vec![0x83, 3]);
    }
}
