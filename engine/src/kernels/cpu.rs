//! Which instruction-set path the kernels take, chosen once and proven available.

use std::fmt;
use std::sync::OnceLock;

use thiserror::Error;

/// Instruction-set levels, each including everything below it.
///
/// | level | adds | used for |
/// | --- | --- | --- |
/// | `Scalar` | | the reference every other path is tested against |
/// | `Avx2` | AVX2 + FMA + F16C, 8 f32 lanes | every op |
/// | `Avx512` | AVX-512 F/BW/VL/DQ, 16 lanes, masked tails | every op |
/// | `Avx512Vnni` | `VPDPBUSD` | int8 dot products |
/// | `Avx512Bf16` | `VDPBF16PS`, `VCVTNE2PS2BF16` | bf16 dot products |
/// | `Amx` | AMX tiles (`TDPBF16PS`), granted by the OS | bf16 GEMM |
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
    Avx512Vnni,
    Avx512Bf16,
    Amx,
}

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 6] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni, Isa::Avx512Bf16, Isa::Amx];

    /// The name `SPIRAL_ISA` accepts.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Amx => "amx",
        }
    }

    /// Parses a level name.
    pub fn parse(name: &str) -> Result<Isa, IsaError> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| IsaError::Unknown(name.to_string()))
    }

    /// Whether this CPU (and, for AMX, the OS) can run this level.
    pub fn is_available(self) -> bool {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        self <= *DETECTED.get_or_init(detect)
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A level could not be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IsaError {
    #[error(
        "unknown instruction set {0:?}; SPIRAL_ISA takes one of scalar, avx2, avx512, avx512vnni, avx512bf16, amx"
    )]
    Unknown(String),
    #[error("this machine cannot run the {asked} path (the best it has is {best}); unset SPIRAL_ISA or ask for a lower level")]
    Unavailable { asked: Isa, best: Isa },
}

/// Proof that a level is available: kernels take a `Cpu` and may use every instruction its
/// level includes. Only the constructors below make one, and each checks the machine.
///
/// ```
/// use spiral_engine::kernels::{Cpu, Isa};
/// let cpu = Cpu::best();
/// assert!(cpu.isa().is_available());
/// assert!(Cpu::forced(Isa::Scalar).is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    isa: Isa,
}

impl Cpu {
    /// The highest level this machine runs.
    pub fn best() -> Cpu {
        Cpu { isa: Isa::ALL.into_iter().rev().find(|i| i.is_available()).unwrap_or(Isa::Scalar) }
    }

    /// Exactly `isa`, or an error saying the machine lacks it.
    pub fn forced(isa: Isa) -> Result<Cpu, IsaError> {
        if isa.is_available() {
            Ok(Cpu { isa })
        } else {
            Err(IsaError::Unavailable { asked: isa, best: Cpu::best().isa })
        }
    }

    /// `SPIRAL_ISA` if set (an error if unknown or unavailable), else [`Cpu::best`].
    pub fn from_env() -> Result<Cpu, IsaError> {
        match std::env::var("SPIRAL_ISA") {
            Ok(name) if !name.trim().is_empty() => Cpu::forced(Isa::parse(&name)?),
            _ => Ok(Cpu::best()),
        }
    }

    /// The level this token grants.
    pub fn isa(self) -> Isa {
        self.isa
    }

    /// This token, lowered to at most `cap` (a kernel that has no path above `cap`).
    pub fn at_most(self, cap: Isa) -> Cpu {
        Cpu { isa: self.isa.min(cap) }
    }

    /// Whether this level's bf16 products (`VDPBF16PS`, 32 per instruction) run at the
    /// rate of its f32 FMAs (16 per instruction), so that bf16 doubles the products per
    /// cycle and trading precision for it pays. AMD's cores (Zen 4 on) issue both at one a
    /// cycle. Intel's issue FMAs on two ports and `VDPBF16PS` on one, so bf16 products
    /// come no faster than f32's and the rounding and packing come on top: on a Xeon with
    /// AMX the VITS voice took 13-37 % longer in mixed precision than in f32 (KERNELS.md).
    pub fn bf16_doubles_products(self) -> bool {
        self.isa >= Isa::Avx512Bf16 && vendor() == *AMD
    }
}

/// AMD's CPUID vendor string (/proc/cpuinfo's `vendor_id`).
const AMD: &[u8; 12] = b"AuthenticAMD";

/// The vendor string of CPUID leaf 0 (EBX, EDX, ECX), read once.
#[cfg(target_arch = "x86_64")]
fn vendor() -> [u8; 12] {
    static VENDOR: OnceLock<[u8; 12]> = OnceLock::new();
    *VENDOR.get_or_init(|| {
        let leaf0 = std::arch::x86_64::__cpuid(0);
        let mut name = [0u8; 12];
        for (bytes, register) in name.chunks_exact_mut(4).zip([leaf0.ebx, leaf0.edx, leaf0.ecx]) {
            bytes.copy_from_slice(&register.to_le_bytes());
        }
        name
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn vendor() -> [u8; 12] {
    [0; 12]
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    use std::arch::is_x86_feature_detected as has;
    if !(has!("avx2") && has!("fma") && has!("f16c")) {
        return Isa::Scalar;
    }
    if !(has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq")) {
        return Isa::Avx2;
    }
    if !has!("avx512vnni") {
        return Isa::Avx512;
    }
    if !has!("avx512bf16") {
        return Isa::Avx512Vnni;
    }
    if !amx_granted() {
        return Isa::Avx512Bf16;
    }
    Isa::Amx
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::Scalar
}

/// AMX needs three yeses: the CPU has AMX-TILE and AMX-BF16 (CPUID leaf 7), the OS saves
/// tile state (XCR0 bits 17 and 18), and Linux grants this process the tile data
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`).
#[cfg(target_arch = "x86_64")]
fn amx_granted() -> bool {
    use std::arch::x86_64::{__cpuid_count, _xgetbv};
    const AMX_BF16: u32 = 1 << 22;
    const AMX_TILE: u32 = 1 << 24;
    const XTILE_STATE: u64 = (1 << 17) | (1 << 18);
    // CPUID leaf 7 exists on every CPU with AVX-512, which the caller checked.
    let leaf7 = __cpuid_count(7, 0);
    if leaf7.edx & (AMX_TILE | AMX_BF16) != (AMX_TILE | AMX_BF16) {
        return false;
    }
    // SAFETY: OSXSAVE is implied by AVX having been detected; XGETBV(0) reads XCR0.
    let xcr0 = unsafe { _xgetbv(0) };
    if xcr0 & XTILE_STATE != XTILE_STATE {
        return false;
    }
    request_tile_data()
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_data() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain syscall with integer arguments; it only changes this process's
    // permission to use tile state.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_tile_data() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Ok(isa));
        }
        assert_eq!(Isa::parse(" AVX512 "), Ok(Isa::Avx512));
        assert!(matches!(Isa::parse("sse9"), Err(IsaError::Unknown(_))));
    }

    #[test]
    fn forcing_follows_availability() {
        let best = Cpu::best().isa();
        for isa in Isa::ALL {
            match Cpu::forced(isa) {
                Ok(cpu) => assert!(isa <= best && cpu.isa() == isa),
                Err(e) => {
                    assert!(isa > best);
                    assert!(e.to_string().contains(isa.name()), "{e}");
                }
            }
        }
        assert_eq!(Cpu::best().at_most(Isa::Avx2).isa(), best.min(Isa::Avx2));
    }

    /// The vendor CPUID names is the one the kernel read into /proc/cpuinfo.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn the_vendor_is_the_one_linux_reports() {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let id = info.lines().find_map(|l| l.strip_prefix("vendor_id")).unwrap();
        let id = id.trim_start_matches([' ', '\t', ':']);
        assert_eq!(&vendor()[..], id.as_bytes(), "/proc/cpuinfo says {id}");
    }
}
