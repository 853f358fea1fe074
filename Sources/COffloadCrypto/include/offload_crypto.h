#ifndef OFFLOAD_CRYPTO_H
#define OFFLOAD_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

/// A thin shim over OpenSSL's libcrypto (EVP): the AEADs ESP uses, encrypting and decrypting in
/// place or from scattered pieces without allocating per packet, and SHA-256. Nothing here is
/// cryptography of its own: every function calls EVP and reports its result. Keys are copied
/// into OpenSSL's context (which cleanses them when freed) and never returned.

/// The AEADs (RFC 4106 AES-GCM with a 16-byte ICV, RFC 7634 ChaCha20-Poly1305).
enum {
    OFFLOAD_AEAD_AES_128_GCM = 1,
    OFFLOAD_AEAD_AES_256_GCM = 2,
    OFFLOAD_AEAD_CHACHA20_POLY1305 = 3,
};

/// One piece of a scattered input.
typedef struct offload_piece {
    const void *base;
    size_t length;
} offload_piece;

typedef struct offload_aead offload_aead;

/// A context for `algorithm` with `key` (16 or 32 bytes, without the salt), for sealing when
/// `encrypt` else for opening. NULL when the algorithm or key length is wrong or OpenSSL fails.
offload_aead *offload_aead_new(int algorithm, const uint8_t *key, size_t key_length, int encrypt);

/// Frees the context (OpenSSL cleanses the expanded key).
void offload_aead_free(offload_aead *ctx);

/// Seals: authenticates `aad`, encrypts the `count` pieces and then `trailer` into `out` (which
/// may not overlap the pieces, but may be where they are when there is one piece in place), and
/// writes the 16-byte tag to `tag`. `nonce` is 12 bytes. Returns the ciphertext length or -1.
long offload_aead_seal(offload_aead *ctx, const uint8_t *nonce, const uint8_t *aad, size_t aad_length,
                       const offload_piece *pieces, int count, const uint8_t *trailer, size_t trailer_length,
                       uint8_t *out, uint8_t *tag);

/// Opens in place: authenticates `aad` and `data`, decrypts `data` (`length` bytes) where it is,
/// and checks the 16-byte `tag` (OpenSSL compares it in constant time). Returns 1 when the tag is
/// right, 0 when it is not (the data is then garbage and must not be used), -1 on failure.
int offload_aead_open(offload_aead *ctx, const uint8_t *nonce, const uint8_t *aad, size_t aad_length,
                      uint8_t *data, size_t length, const uint8_t *tag);

/// SHA-256 of `length` bytes into `digest` (32 bytes). Returns 1, or 0 on failure.
int offload_sha256(const void *data, size_t length, uint8_t *digest);

/// Constant-time comparison (CRYPTO_memcmp): 0 when equal.
int offload_constant_time_compare(const void *a, const void *b, size_t length);

/// Fills `buffer` with `length` random bytes (RAND_bytes). Returns 1, or 0 on failure.
int offload_random_bytes(uint8_t *buffer, size_t length);

/// HMAC with SHA-256 (`digest` 256) or SHA-384 (384) of `length` bytes under `key`, into `out`
/// (32 or 48 bytes). Returns the MAC's length, or 0 on failure. For IKEv2's PRF (RFC 4868).
size_t offload_hmac(int digest, const void *key, size_t key_length, const void *data, size_t length, uint8_t *out);

/// SHA-1 of `length` bytes into `digest` (20 bytes): only for IKEv2's NAT detection hashes
/// (RFC 7296 §2.23), which the RFC fixes to SHA-1. Returns 1, or 0 on failure.
int offload_sha1(const void *data, size_t length, uint8_t *digest);

/// The key-exchange groups (IKEv2 transform type 4 numbers).
enum {
    OFFLOAD_KE_MODP_2048 = 14,
    OFFLOAD_KE_CURVE25519 = 31,
};

typedef struct offload_ke offload_ke;

/// A fresh private key of `group` (libcrypto's generator); NULL on an unknown group or failure.
offload_ke *offload_ke_new(int group);

/// Frees the key (libcrypto cleanses it).
void offload_ke_free(offload_ke *ke);

/// The public value as IKEv2's KE payload carries it (32 bytes for Curve25519, 256 big-endian
/// bytes for MODP-2048) into `out` (room for `capacity`). Returns its length, or 0.
size_t offload_ke_public(offload_ke *ke, uint8_t *out, size_t capacity);

/// The shared secret with the peer's public value (the same encoding) into `out` (room for
/// `capacity`; MODP-2048's is left-padded to 256 bytes as RFC 7296 §2.14 asks). Returns its
/// length, or 0 when the peer's value is invalid (wrong length, a small-order point, out of range).
size_t offload_ke_shared(offload_ke *ke, const uint8_t *peer, size_t peer_length, uint8_t *out, size_t capacity);

// ---- Keeping keys out of places they must not reach. ----

/// Overwrites `length` bytes at `buffer` with zeros in a way the compiler may not remove
/// (OPENSSL_cleanse): for key material about to be freed.
void offload_cleanse(void *buffer, size_t length);

/// Stops this process from writing core dumps, which would put its keys on disk:
/// setrlimit(RLIMIT_CORE, 0) and prctl(PR_SET_DUMPABLE, 0) (the latter also keeps non-root
/// users from ptrace-attaching, and makes /proc/self's files root's). prctl is variadic, so Swift
/// cannot call it: hence here. Returns 0, or -errno of the first call that failed.
int offload_disable_core_dumps(void);

/// prctl(PR_GET_DUMPABLE): 1 when this process may dump core, 0 when not, or -errno.
int offload_dumpable(void);

#endif
