//! Where a frame sits: [`SpiralAddress`] (stream, position, stride) and the [`Role`] its
//! stride encodes.

/// What a frame sounds like, decided from its audio (see [`crate::analysis`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Below the silence level: a pause, or the room before and after speech.
    Silence,
    /// Periodic: vowels, nasals, voiced consonants.
    Voiced,
    /// Sound without a period: fricatives, aspiration, bursts.
    Unvoiced,
    /// The frame where sound starts or jumps in level.
    Attack,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Silence, Role::Voiced, Role::Unvoiced, Role::Attack];

    /// The address stride of this role. Frames of one role are compared only with frames
    /// of the same stride, so the cascade's first level is one byte compare. Zero is no
    /// stride (an address that was never assigned), so a stored address without a role is
    /// detected rather than read as silence.
    pub const fn stride(self) -> u8 {
        match self {
            Role::Silence => 1,
            Role::Voiced => 2,
            Role::Unvoiced => 3,
            Role::Attack => 5,
        }
    }

    pub const fn from_stride(stride: u8) -> Option<Role> {
        match stride {
            1 => Some(Role::Silence),
            2 => Some(Role::Voiced),
            3 => Some(Role::Unvoiced),
            5 => Some(Role::Attack),
            _ => None,
        }
    }

    /// Position in [`Role::ALL`], for tables indexed by role.
    pub const fn slot(self) -> usize {
        match self {
            Role::Silence => 0,
            Role::Voiced => 1,
            Role::Unvoiced => 2,
            Role::Attack => 3,
        }
    }
}

/// Six bytes naming a frame: the stream it belongs to (16 bits), its position in that
/// stream (24 bits, counting frames and wrapping after 2^24, which is 54 hours of 11.6 ms
/// VITS frames; the graph only compares positions inside its retention window), and a
/// stride encoding its [`Role`].
///
/// ```
/// use spiral_graph::{Role, SpiralAddress};
///
/// let a = SpiralAddress::new(3, 1_000, Role::Voiced);
/// assert_eq!((a.stream(), a.position(), a.role()), (3, 1_000, Some(Role::Voiced)));
/// assert_eq!(std::mem::size_of::<SpiralAddress>(), 6);
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SpiralAddress {
    bytes: [u8; 6],
}

const POSITION_MASK: u32 = (1 << 24) - 1;

impl SpiralAddress {
    /// `position` is kept modulo 2^24.
    pub fn new(stream: u16, position: u32, role: Role) -> SpiralAddress {
        let [s0, s1] = stream.to_le_bytes();
        let [p0, p1, p2, _] = (position & POSITION_MASK).to_le_bytes();
        SpiralAddress { bytes: [s0, s1, p0, p1, p2, role.stride()] }
    }

    pub fn stream(self) -> u16 {
        u16::from_le_bytes([self.bytes[0], self.bytes[1]])
    }

    pub fn position(self) -> u32 {
        u32::from_le_bytes([self.bytes[2], self.bytes[3], self.bytes[4], 0])
    }

    pub fn stride(self) -> u8 {
        self.bytes[5]
    }

    /// `None` when the stride is not one a role has (a corrupt or unassigned address).
    pub fn role(self) -> Option<Role> {
        Role::from_stride(self.stride())
    }

    pub fn to_le_bytes(self) -> [u8; 6] {
        self.bytes
    }

    pub fn from_le_bytes(bytes: [u8; 6]) -> SpiralAddress {
        SpiralAddress { bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_positions_wrap() {
        for role in Role::ALL {
            assert_eq!(Role::from_stride(role.stride()), Some(role));
            let a = SpiralAddress::new(u16::MAX, (1 << 24) + 7, role);
            assert_eq!((a.stream(), a.position(), a.role()), (u16::MAX, 7, Some(role)));
            assert_eq!(SpiralAddress::from_le_bytes(a.to_le_bytes()), a);
        }
        assert_eq!(SpiralAddress::default().role(), None);
    }
}
