//! [`AudioNode`]: one frame of audio summarized in 60 bytes, and its versioned
//! little-endian serialization.

use half::bf16;
use spiral_engine::route::Route;
use thiserror::Error;

use crate::address::{Role, SpiralAddress};
use crate::{pvq, BANDS};

/// A frame as the graph holds it: what it sounds like (band energies, band shape, phase),
/// where it is (its address, whose stride is its role), which palette entry its decoder
/// input fell in, and what the scheduler did with it.
///
/// All fields are byte arrays, so the struct has no padding and its layout is its wire
/// format.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AudioNode {
    /// Energy of each CELT band in dB relative to a full-scale sine, as bf16.
    bands: [[u8; 2]; BANDS],
    /// The band shape (energies less their mean) as a PVQ code of 48 bits.
    pvq: [u8; 6],
    /// The strongest spectral peak: its frequency in Hz (u16) and phase in 1/65536 turns (u16).
    phase: [u8; 4],
    pub address: SpiralAddress,
    /// The online palette entry of the frame's decoder input (see [`crate::palette`]).
    pub palette: u8,
    route: u8,
}

const _: () = assert!(std::mem::size_of::<AudioNode>() == 60);
const _: () = assert!(std::mem::align_of::<AudioNode>() == 1);

/// The strongest spectral peak of a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phase {
    pub hz: u16,
    /// In 1/65536 of a turn.
    pub angle: u16,
}

impl AudioNode {
    pub fn new(
        bands_db: &[f32; BANDS],
        shape: u64,
        phase: Phase,
        address: SpiralAddress,
        palette: u8,
        route: Route,
    ) -> AudioNode {
        let [p0, p1, p2, p3, p4, p5, ..] = shape.to_le_bytes();
        let [h0, h1] = phase.hz.to_le_bytes();
        let [a0, a1] = phase.angle.to_le_bytes();
        AudioNode {
            bands: bands_db.map(|e| bf16::from_f32(e).to_le_bytes()),
            pvq: [p0, p1, p2, p3, p4, p5],
            phase: [h0, h1, a0, a1],
            address,
            palette,
            route: route_byte(route),
        }
    }

    /// Band energies in dB.
    pub fn bands(&self) -> [f32; BANDS] {
        self.band_bits().map(|b| bf16::from_bits(b).to_f32())
    }

    /// Band energies as stored: bf16 bit patterns.
    pub fn band_bits(&self) -> [u16; BANDS] {
        self.bands.map(u16::from_le_bytes)
    }

    /// The PVQ code of the band shape.
    pub fn shape_code(&self) -> u64 {
        let mut b = [0u8; 8];
        b[..6].copy_from_slice(&self.pvq);
        u64::from_le_bytes(b)
    }

    /// The band shape as a unit vector (decoded from the PVQ code).
    pub fn shape(&self) -> [f32; BANDS] {
        pvq::direction(&pvq::unrank(self.shape_code()).unwrap_or([0; BANDS]))
    }

    pub fn phase(&self) -> Phase {
        Phase {
            hz: u16::from_le_bytes([self.phase[0], self.phase[1]]),
            angle: u16::from_le_bytes([self.phase[2], self.phase[3]]),
        }
    }

    pub fn role(&self) -> Option<Role> {
        self.address.role()
    }

    pub fn route(&self) -> Route {
        route_from_byte(self.route).unwrap_or(Route::Decode)
    }

    pub fn set_route(&mut self, route: Route) {
        self.route = route_byte(route);
    }

    pub fn to_le_bytes(&self) -> [u8; 60] {
        let mut out = [0u8; 60];
        out[..42].copy_from_slice(self.bands.as_flattened());
        out[42..48].copy_from_slice(&self.pvq);
        out[48..52].copy_from_slice(&self.phase);
        out[52..58].copy_from_slice(&self.address.to_le_bytes());
        out[58] = self.palette;
        out[59] = self.route;
        out
    }

    /// A node from its bytes, checked: a stride that is no role, a route byte that is no
    /// route or a shape code past the PVQ codebook is an error naming the field.
    pub fn from_le_bytes(b: &[u8; 60]) -> Result<AudioNode, &'static str> {
        let node = AudioNode {
            bands: std::array::from_fn(|i| [b[2 * i], b[2 * i + 1]]),
            pvq: b[42..48].try_into().expect("6 bytes"),
            phase: b[48..52].try_into().expect("4 bytes"),
            address: SpiralAddress::from_le_bytes(b[52..58].try_into().expect("6 bytes")),
            palette: b[58],
            route: b[59],
        };
        if node.role().is_none() {
            return Err("address stride is not a role's");
        }
        if route_from_byte(node.route).is_none() {
            return Err("route byte is not a route");
        }
        if pvq::unrank(node.shape_code()).is_none() {
            return Err("band shape code is past the PVQ codebook");
        }
        Ok(node)
    }
}

fn route_byte(route: Route) -> u8 {
    match route {
        Route::Decode => 0,
        Route::Skip => 1,
        Route::Reuse => 2,
    }
}

fn route_from_byte(b: u8) -> Option<Route> {
    match b {
        0 => Some(Route::Decode),
        1 => Some(Route::Skip),
        2 => Some(Route::Reuse),
        _ => None,
    }
}

/// The first bytes of a serialized node sequence.
pub const MAGIC: [u8; 4] = *b"SPAN";
/// The wire format version [`serialize`] writes; [`deserialize`] reads exactly this one.
pub const VERSION: u16 = 1;
const HEADER: usize = 4 + 2 + 2 + 8;

#[derive(Debug, Error, PartialEq)]
pub enum NodeError {
    #[error("not a spiral node sequence (the bytes do not start with \"SPAN\")")]
    Magic,
    #[error("node sequence version {0} is not supported (this build reads version {VERSION})")]
    Version(u16),
    #[error("node size {0} in the header; this format's nodes are 60 bytes")]
    NodeSize(u16),
    #[error("node sequence truncated: {expected} bytes announced, {got} present")]
    Truncated { expected: u64, got: u64 },
    #[error("node {index}: {reason}")]
    Node { index: u64, reason: &'static str },
}

/// Nodes as bytes: "SPAN", version (u16), node size (u16), count (u64), then each node's
/// 60 bytes, all little-endian.
///
/// ```
/// use spiral_engine::route::Route;
/// use spiral_graph::{node, AudioNode, Phase, Role, SpiralAddress};
///
/// let a = AudioNode::new(&[-20.0; 21], 0, Phase::default(), SpiralAddress::new(0, 1, Role::Voiced), 7, Route::Decode);
/// let bytes = node::serialize(&[a]);
/// assert_eq!(bytes.len(), 16 + 60);
/// assert_eq!(node::deserialize(&bytes)?, vec![a]);
/// # Ok::<(), spiral_graph::node::NodeError>(())
/// ```
pub fn serialize(nodes: &[AudioNode]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 60 * nodes.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&60u16.to_le_bytes());
    out.extend_from_slice(&(nodes.len() as u64).to_le_bytes());
    for n in nodes {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out
}

pub fn deserialize(bytes: &[u8]) -> Result<Vec<AudioNode>, NodeError> {
    if bytes.len() < 4 || bytes[..4] != MAGIC {
        return Err(NodeError::Magic);
    }
    if bytes.len() < HEADER {
        return Err(NodeError::Truncated { expected: HEADER as u64, got: bytes.len() as u64 });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(NodeError::Version(version));
    }
    let size = u16::from_le_bytes([bytes[6], bytes[7]]);
    if size != 60 {
        return Err(NodeError::NodeSize(size));
    }
    let count = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let expected = count.checked_mul(60).and_then(|b| b.checked_add(HEADER as u64)).unwrap_or(u64::MAX);
    if expected != bytes.len() as u64 {
        return Err(NodeError::Truncated { expected, got: bytes.len() as u64 });
    }
    bytes[HEADER..]
        .chunks_exact(60)
        .enumerate()
        .map(|(i, b)| {
            AudioNode::from_le_bytes(b.try_into().expect("60 bytes"))
                .map_err(|reason| NodeError::Node { index: i as u64, reason })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u32) -> AudioNode {
        let bands = std::array::from_fn(|b| -60.0 + b as f32 * 2.5 + i as f32);
        let shape = pvq::rank(&pvq::quantize(&std::array::from_fn(|b| (b as f32 - 10.0) * (i as f32 + 1.0))));
        let role = Role::ALL[i as usize % 4];
        let route = [Route::Decode, Route::Skip, Route::Reuse][i as usize % 3];
        AudioNode::new(
            &bands,
            shape,
            Phase { hz: 100 + i as u16, angle: (i as u16).wrapping_mul(4096) },
            SpiralAddress::new(2, i, role),
            i as u8,
            route,
        )
    }

    #[test]
    fn serialization_round_trips_every_field() {
        let nodes: Vec<AudioNode> = (0..50).map(node).collect();
        let back = deserialize(&serialize(&nodes)).unwrap();
        assert_eq!(back, nodes);
        let n = back[13];
        assert_eq!(n.bands()[20], -60.0 + 50.0 + 13.0);
        assert_eq!((n.phase().hz, n.address.position(), n.palette, n.route()), (113, 13, 13, Route::Skip));
        assert_eq!(n.role(), Some(Role::Voiced));
        let bytes = n.to_le_bytes();
        assert_eq!(&bytes[52..54], &2u16.to_le_bytes(), "stream at byte 52, little-endian");
    }

    #[test]
    fn bad_bytes_are_named_errors() {
        let good = serialize(&[node(1), node(2)]);
        assert_eq!(deserialize(b"RIFF"), Err(NodeError::Magic));
        let mut v = good.clone();
        v[4] = 9;
        assert_eq!(deserialize(&v), Err(NodeError::Version(9)));
        assert!(matches!(deserialize(&good[..good.len() - 1]), Err(NodeError::Truncated { .. })));
        let mut v = good.clone();
        v[16 + 60 + 57] = 4; // the second node's stride
        assert_eq!(deserialize(&v), Err(NodeError::Node { index: 1, reason: "address stride is not a role's" }));
        let mut v = good;
        v[16 + 59] = 3;
        assert_eq!(deserialize(&v), Err(NodeError::Node { index: 0, reason: "route byte is not a route" }));
    }
}
