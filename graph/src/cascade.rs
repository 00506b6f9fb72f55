//! The frame graph: a petgraph of [`AudioNode`]s with temporal and similarity edges, held
//! to a retention window, and the HHTL cascade that searches it.
//!
//! [`FrameGraph::cascade_search`] narrows the retained frames in four levels, each cheaper
//! per candidate than the next and each counted in [`CascadeStats`]:
//! 1. **HEEL**: frames whose address stride (role) differs from the query's are rejected
//!    without touching them: the route table is kept per role, so only the query's role is
//!    ever visited;
//! 2. **HIP**: the route table maps a palette index to the frames filed under it, O(1);
//! 3. **TWIG**: band energies, L1 distance in dB over the 21 bands, keeps the nearest
//!    [`TWIG_FANOUT`] · k within [`CascadeConfig::twig_max_db`];
//! 4. **LEAF**: the full comparison for those only: squared L2 between the frames' decoder
//!    inputs relative to the query's energy (or, for frames stored without one, between
//!    their band energies), the k nearest returned.

use std::collections::VecDeque;

use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::Directed;
use spiral_engine::kernels::{vector, Cpu};

use crate::address::Role;
use crate::node::AudioNode;
use crate::palette::ENTRIES;
use crate::BANDS;

/// TWIG keeps this many candidates per result asked for.
pub const TWIG_FANOUT: usize = 4;

/// How two retained frames are related.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Edge {
    /// The earlier frame precedes the later in the same stream.
    Temporal,
    /// The later frame's nearest earlier match, at this LEAF distance.
    Similar(f32),
}

/// Candidates entering and leaving each level, summed over queries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CascadeStats {
    pub queries: u64,
    /// Retained frames when each query started (HEEL's input).
    pub heel_in: u64,
    /// Frames of the query's role.
    pub heel_out: u64,
    /// Frames filed under the query's palette index.
    pub hip_out: u64,
    pub twig_out: u64,
    pub leaf_out: u64,
}

impl CascadeStats {
    /// Fraction of the candidates entering HEEL that each level rejected:
    /// `[heel, hip, twig, leaf]`.
    pub fn rejected(&self) -> [f64; 4] {
        let total = self.heel_in.max(1) as f64;
        [
            (self.heel_in - self.heel_out) as f64 / total,
            (self.heel_out - self.hip_out) as f64 / total,
            (self.hip_out - self.twig_out) as f64 / total,
            (self.twig_out - self.leaf_out) as f64 / total,
        ]
    }
}

/// One result of a search.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Match {
    pub node: NodeIndex,
    /// LEAF distance (see the module doc).
    pub distance: f32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CascadeConfig {
    /// Frames retained; the oldest leaves when a new one arrives.
    pub retention: usize,
    /// Values per frame of decoder input kept for LEAF (0: none, LEAF compares bands).
    pub dims: usize,
    /// TWIG's limit on the L1 band distance, dB summed over the bands.
    pub twig_max_db: f32,
    /// A new frame gets a similarity edge to its nearest match within this LEAF distance.
    pub similar: f32,
}

impl Default for CascadeConfig {
    fn default() -> Self {
        CascadeConfig { retention: 4096, dims: 0, twig_max_db: 6.0 * BANDS as f32, similar: 0.05 }
    }
}

/// Band lanes a filed frame keeps for TWIG: the 21 bands and zeros, a whole number of
/// vector registers.
const LANES: usize = 24;

/// A frame as the route table files it: TWIG reads its bands (bf16 bits) from here, in
/// order, instead of chasing each node in the graph.
#[derive(Clone, Copy, Debug)]
struct Filed {
    at: NodeIndex,
    bands: [u16; LANES],
}

/// Frames of one role filed by palette index, oldest first in each list.
type RouteTable = Vec<VecDeque<Filed>>;

/// See the [module documentation](self).
///
/// ```
/// use spiral_engine::route::Route;
/// use spiral_graph::{AudioNode, CascadeConfig, FrameGraph, Phase, Role, SpiralAddress};
///
/// let mut graph = FrameGraph::new(CascadeConfig { retention: 100, ..CascadeConfig::default() });
/// for i in 0..300u32 {
///     let bands = [-30.0 - (i % 7) as f32; 21];
///     let node = AudioNode::new(&bands, 0, Phase::default(), SpiralAddress::new(0, i, Role::Voiced), (i % 7) as u8, Route::Decode);
///     graph.insert(node, &[]);
/// }
/// assert_eq!(graph.len(), 100);
/// let query = AudioNode::new(&[-33.0; 21], 0, Phase::default(), SpiralAddress::new(0, 300, Role::Voiced), 3, Route::Decode);
/// let best = graph.cascade_search(&query, &[], 1)[0];
/// assert_eq!(graph.node(best.node).unwrap().palette, 3);
/// assert_eq!(best.distance, 0.0);
/// ```
pub struct FrameGraph {
    cpu: Cpu,
    config: CascadeConfig,
    graph: StableGraph<AudioNode, Edge, Directed, u32>,
    order: VecDeque<NodeIndex>,
    /// Per role ([`Role::slot`]), per palette index.
    routes: Vec<RouteTable>,
    /// Decoder inputs, `dims` values per node, at the node's index (petgraph reuses the
    /// indices of removed nodes, so this stays within the retention window).
    features: Vec<f32>,
    /// The newest frame of each stream, for temporal edges.
    last: Vec<(u16, NodeIndex)>,
    stats: CascadeStats,
}

impl FrameGraph {
    pub fn new(config: CascadeConfig) -> FrameGraph {
        assert!(config.retention > 0, "a frame graph retains at least one frame");
        FrameGraph {
            cpu: Cpu::best(),
            graph: StableGraph::with_capacity(config.retention, 2 * config.retention),
            order: VecDeque::with_capacity(config.retention),
            routes: (0..Role::ALL.len()).map(|_| vec![VecDeque::new(); ENTRIES]).collect(),
            features: Vec::new(),
            last: Vec::new(),
            stats: CascadeStats::default(),
            config,
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn config(&self) -> &CascadeConfig {
        &self.config
    }

    pub fn stats(&self) -> CascadeStats {
        self.stats
    }

    pub fn node(&self, at: NodeIndex) -> Option<&AudioNode> {
        self.graph.node_weight(at)
    }

    /// The retained frame's decoder input (empty when the graph keeps none).
    pub fn features(&self, at: NodeIndex) -> &[f32] {
        let d = self.config.dims;
        self.features.get(at.index() * d..(at.index() + 1) * d).unwrap_or(&[])
    }

    /// The petgraph itself, for traversals (temporal chains, similarity neighbourhoods).
    pub fn graph(&self) -> &StableGraph<AudioNode, Edge, Directed, u32> {
        &self.graph
    }

    /// Frames of `role` filed under `palette`, oldest first.
    pub fn route(&self, role: Role, palette: u8) -> impl Iterator<Item = NodeIndex> + '_ {
        self.routes[role.slot()][usize::from(palette)].iter().map(|f| f.at)
    }

    /// Bytes the graph holds, allocated capacity included: nodes, edges, route table,
    /// retention queue and decoder inputs.
    pub fn bytes(&self) -> usize {
        // A petgraph node is its weight, an occupancy tag and two edge-list heads; an edge
        // is its weight, two endpoints and two next-edge links.
        let node = std::mem::size_of::<Option<AudioNode>>() + 2 * 4;
        let edge = std::mem::size_of::<Option<Edge>>() + 4 * 4;
        let (nodes, edges) = self.graph.capacity();
        let filed = std::mem::size_of::<Filed>();
        let routes: usize = self.routes.iter().flatten().map(|q| q.capacity() * filed + std::mem::size_of_val(q)).sum();
        nodes * node + edges * edge + routes + self.order.capacity() * 4 + self.features.capacity() * 4
    }

    /// Adds a frame (with its decoder input, `dims` values or none), linked to the previous
    /// frame of its stream and to its nearest match within [`CascadeConfig::similar`]; the
    /// oldest frame leaves if the window is full.
    pub fn insert(&mut self, node: AudioNode, features: &[f32]) -> NodeIndex {
        let role = node.role().expect("a retained frame has a role");
        assert!(features.is_empty() || features.len() == self.config.dims, "decoder input of the wrong length");
        if self.order.len() == self.config.retention {
            self.evict();
        }
        let similar = self.search(&node, features, 1).0.first().copied();
        let at = self.graph.add_node(node);
        let d = self.config.dims;
        if d > 0 {
            let end = (at.index() + 1) * d;
            if self.features.len() < end {
                self.features.resize(end, 0.0);
            }
            let slot = &mut self.features[at.index() * d..end];
            if features.is_empty() {
                slot.fill(0.0);
            } else {
                slot.copy_from_slice(features);
            }
        }
        let stream = node.address.stream();
        match self.last.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, previous)) => {
                if self.graph.contains_node(*previous) {
                    self.graph.add_edge(*previous, at, Edge::Temporal);
                }
                *previous = at;
            }
            None => self.last.push((stream, at)),
        }
        if let Some(m) = similar.filter(|m| m.distance <= self.config.similar) {
            self.graph.add_edge(m.node, at, Edge::Similar(m.distance));
        }
        let mut bands = [0u16; LANES];
        bands[..BANDS].copy_from_slice(&node.band_bits());
        self.routes[role.slot()][usize::from(node.palette)].push_back(Filed { at, bands });
        self.order.push_back(at);
        at
    }

    fn evict(&mut self) {
        let Some(old) = self.order.pop_front() else { return };
        let node = self.graph.remove_node(old).expect("retained frames are in the graph");
        let route = &mut self.routes[node.role().expect("retained").slot()][usize::from(node.palette)];
        // Frames leave in arrival order, so the oldest of its list is this one.
        debug_assert_eq!(route.front().map(|f| f.at), Some(old));
        route.pop_front();
    }

    /// The k retained frames nearest the query, through the four levels (see the
    /// [module documentation](self)); `features` is the query's decoder input (or empty).
    pub fn cascade_search(&mut self, query: &AudioNode, features: &[f32], k: usize) -> Vec<Match> {
        let (found, [heel, hip, twig]) = self.search(query, features, k);
        let s = &mut self.stats;
        s.queries += 1;
        s.heel_in += self.order.len() as u64;
        s.heel_out += heel as u64;
        s.hip_out += hip as u64;
        s.twig_out += twig as u64;
        s.leaf_out += found.len() as u64;
        found
    }

    /// The matches and the candidates left after HEEL, HIP and TWIG.
    fn search(&self, query: &AudioNode, features: &[f32], k: usize) -> (Vec<Match>, [usize; 3]) {
        let Some(role) = query.role() else { return (Vec::new(), [0; 3]) };
        // HEEL: only the query's role is visited.
        let table = &self.routes[role.slot()];
        let heel: usize = table.iter().map(VecDeque::len).sum();
        // HIP.
        let hip = &table[usize::from(query.palette)];
        // TWIG.
        let bands = query.bands();
        let mut lanes = [0.0f32; LANES];
        lanes[..BANDS].copy_from_slice(&bands);
        let mut twig: Vec<(f32, NodeIndex)> =
            hip.iter().map(|f| (l1(&lanes, &f.bands), f.at)).filter(|(d, _)| *d <= self.config.twig_max_db).collect();
        let keep = (TWIG_FANOUT * k).min(twig.len());
        if keep < twig.len() {
            twig.select_nth_unstable_by(keep, |a, b| a.0.total_cmp(&b.0));
            twig.truncate(keep);
        }
        // LEAF.
        let d = self.config.dims;
        let leaf_features = d > 0 && features.len() == d;
        let energy = if leaf_features { vector::dot(self.cpu, features, features).max(f32::MIN_POSITIVE) } else { 0.0 };
        let mut leaf: Vec<Match> = twig
            .into_iter()
            .map(|(_, at)| {
                let distance = if leaf_features {
                    vector::l2_sq(self.cpu, features, &self.features[at.index() * d..][..d]) / energy
                } else {
                    vector::l2_sq(self.cpu, &bands, &self.graph[at].bands()) / BANDS as f32
                };
                Match { node: at, distance }
            })
            .collect();
        leaf.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        leaf.truncate(k);
        (leaf, [heel, hip.len(), keep])
    }
}

/// L1 distance between the query's bands and a filed frame's bf16 bands (the padding
/// lanes are zero in both).
fn l1(a: &[f32; LANES], b: &[u16; LANES]) -> f32 {
    a.iter().zip(b).map(|(x, &y)| (x - f32::from_bits(u32::from(y) << 16)).abs()).sum()
}

#[cfg(test)]
mod tests {
    use spiral_engine::route::Route;

    use super::*;
    use crate::address::SpiralAddress;
    use crate::node::Phase;

    fn node(position: u32, role: Role, palette: u8, level: f32) -> AudioNode {
        let address = SpiralAddress::new(0, position, role);
        AudioNode::new(&[level; BANDS], 0, Phase::default(), address, palette, Route::Decode)
    }

    #[test]
    fn each_level_rejects_what_it_should() {
        let mut g = FrameGraph::new(CascadeConfig { retention: 1000, dims: 2, ..CascadeConfig::default() });
        // 400 frames: roles alternate voiced/unvoiced; palette 0..4; levels -20..-59 dB.
        for i in 0..400u32 {
            let role = if i % 2 == 0 { Role::Voiced } else { Role::Unvoiced };
            g.insert(node(i, role, (i % 8 / 2) as u8, -20.0 - (i % 40) as f32), &[i as f32, 1.0]);
        }
        let query = node(400, Role::Voiced, 1, -30.0);
        let found = g.cascade_search(&query, &[42.0, 1.0], 2);
        let s = g.stats();
        assert_eq!((s.queries, s.heel_in), (1, 400));
        assert_eq!(s.heel_out, 200, "HEEL keeps the voiced half");
        assert_eq!(s.hip_out, 50, "HIP keeps the voiced frames of palette 1 (i % 8 = 2)");
        // TWIG: voiced palette-1 frames have i % 8 = 2, levels -22, -30, -38, -46, -54 dB
        // (i % 40 in 2, 10, 18, 26, 34): within 6 dB per band, only -30 dB (20 frames).
        // 10 frames pass; it keeps the 4 · 2 nearest.
        assert_eq!(s.twig_out, 8);
        assert_eq!(s.leaf_out, 2);
        assert_eq!(found.len(), 2);
        // LEAF ranks the TWIG survivors (all at -30 dB) by decoder input.
        for m in &found {
            assert_eq!(g.node(m.node).unwrap().bands()[0], -30.0);
        }
        assert!(found[0].distance <= found[1].distance);
        assert_eq!(s.rejected().iter().sum::<f64>(), 1.0 - 2.0 / 400.0);
    }

    #[test]
    fn leaf_returns_the_nearest_decoder_input_among_twig_survivors() {
        let mut g = FrameGraph::new(CascadeConfig { retention: 100, dims: 3, ..CascadeConfig::default() });
        // Band levels fall away from frame 7, so TWIG keeps 7 and its neighbours.
        for i in 0..10u32 {
            g.insert(node(i, Role::Voiced, 0, -30.0 - 0.5 * (i as f32 - 7.0).abs()), &[i as f32, 0.0, 1.0]);
        }
        let found = g.cascade_search(&node(10, Role::Voiced, 0, -30.0), &[6.9, 0.0, 1.0], 1);
        assert_eq!(g.features(found[0].node), &[7.0, 0.0, 1.0]);
        assert!(g.cascade_search(&node(10, Role::Silence, 0, -30.0), &[6.9, 0.0, 1.0], 1).is_empty());
    }

    #[test]
    fn memory_stays_flat_over_a_long_stream() {
        let mut g = FrameGraph::new(CascadeConfig { retention: 500, dims: 4, ..CascadeConfig::default() });
        let mut bytes = Vec::new();
        for i in 0..100_000u32 {
            let role = Role::ALL[(i % 7 % 4) as usize];
            g.insert(node(i, role, (i * 31 % 256) as u8, -20.0 - (i % 3) as f32), &[i as f32; 4]);
            if i % 10_000 == 9_999 {
                bytes.push(g.bytes());
            }
        }
        assert_eq!(g.len(), 500);
        assert_eq!(g.graph().node_count(), 500);
        assert!(g.graph().edge_count() <= 2 * 500);
        assert!(bytes.windows(2).all(|w| w[1] == w[0]), "{bytes:?}");
        // Temporal edges link consecutive frames of a stream.
        let newest = *g.order.back().unwrap();
        let previous = g.graph().neighbors_directed(newest, petgraph::Incoming).collect::<Vec<_>>();
        assert!(previous.iter().any(|&p| g.node(p).unwrap().address.position() == 99_998));
    }
}
