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

/// HalfSipHash-1-3 (the kernel's `hsiphash` for flow hashing) of a fixed
/// set of words under a 64-bit secret `key`: a keyed hash, so that without
/// the key no one can pick 5-tuples that land on one ring slot. (A seeded
/// MurmurHash has seed-independent multicollisions: with the 64 bits of an
/// IPv6 interface id to choose, a client could aim every flow at one slot.)
#[inline(always)]
pub fn keyed_words<const N: usize>(key: [u32; 2], words: &[u32; N]) -> u32 {
    let mut v = [key[0], key[1], 0x6c79_6765 ^ key[0], 0x7465_6462 ^ key[1]];
    let mut i = 0;
    while i < N {
        v[3] ^= words[i];
        sip_round(&mut v);
        v[0] ^= words[i];
        i += 1;
    }
    let b = ((N as u32) * 4) << 24;
    v[3] ^= b;
    sip_round(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    sip_round(&mut v);
    sip_round(&mut v);
    sip_round(&mut v);
    v[1] ^ v[3]
}

#[inline(always)]
fn sip_round(v: &mut [u32; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(5) ^ v[0];
    v[0] = v[0].rotate_left(16);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(8) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(7) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[2];
    v[2] = v[2].rotate_left(16);
}

/// Keyed hash of a flow's 5-tuple (addresses/ports as they sit in the
/// packet).
#[inline(always)]
pub fn flow_hash(
    key: [u32; 2],
    src: &[u32; 4],
    dst: &[u32; 4],
    sport: u16,
    dport: u16,
    proto: u8,
) -> u32 {
    keyed_words(
        key,
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

/// Keyed hash for source-IP stickiness: the client address only.
#[inline(always)]
pub fn src_hash(key: [u32; 2], src: &[u32; 4]) -> u32 {
    keyed_words(key, src)
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

    const K: [u32; 2] = [0x0706_0504, 0x0302_0100];

    #[test]
    fn hash_is_stable_and_spreads() {
        // Fixed value: every gateway and every release must agree.
        let a = flow_hash(
            K,
            &[0x0100_000a, 0, 0, 0],
            &[0x6400_000a, 0, 0, 0],
            1234,
            80,
            6,
        );
        assert_eq!(
            a,
            flow_hash(
                K,
                &[0x0100_000a, 0, 0, 0],
                &[0x6400_000a, 0, 0, 0],
                1234,
                80,
                6
            )
        );
        let b = flow_hash(
            K,
            &[0x0100_000a, 0, 0, 0],
            &[0x6400_000a, 0, 0, 0],
            1235,
            80,
            6,
        );
        assert_ne!(a, b);
        // Another key, another hash.
        let other = flow_hash(
            [1, 2],
            &[0x0100_000a, 0, 0, 0],
            &[0x6400_000a, 0, 0, 0],
            1234,
            80,
            6,
        );
        assert_ne!(a, other);
        // Buckets of consecutive source ports are roughly even.
        let mut buckets = [0u32; 8];
        for p in 0..8000u16 {
            buckets[(flow_hash(K, &[1, 0, 0, 0], &[2, 0, 0, 0], p, 80, 6) % 8) as usize] += 1;
        }
        for b in buckets {
            assert!((900..1100).contains(&b), "{buckets:?}");
        }
    }

    /// HalfSipHash-1-3 reference vectors: Linux's `test_vectors_hsiphash`
    /// (lib/tests/siphash_kunit.c, the 32-bit build): vector n hashes the
    /// bytes 0..n-1 under the key bytes 00..07.
    #[test]
    fn half_siphash_matches_the_kernels() {
        let key = [0x0302_0100, 0x0706_0504];
        let w: [u32; 4] = core::array::from_fn(|i| {
            let b = (i * 4) as u8;
            u32::from_le_bytes([b, b + 1, b + 2, b + 3])
        });
        assert_eq!(keyed_words(key, &[0u32; 0]), 0x5814_c896);
        assert_eq!(keyed_words(key, &[w[0]]), 0x7e05_9ea6);
        assert_eq!(keyed_words(key, &[w[0], w[1]]), 0x5779_99b1);
        assert_eq!(keyed_words(key, &[w[0], w[1], w[2]]), 0x6b28_096c);
        assert_eq!(keyed_words(key, &w), 0x8b31_d501);
    }
}
