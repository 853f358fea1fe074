// OpenSSL's EVP AEADs for ESP, see offload_crypto.h. Every function reports EVP's result.
#include "offload_crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

struct offload_aead {
    EVP_CIPHER_CTX *ctx;
    int encrypt;
};

static const EVP_CIPHER *cipher_for(int algorithm, size_t key_length) {
    switch (algorithm) {
    case OFFLOAD_AEAD_AES_128_GCM: return key_length == 16 ? EVP_aes_128_gcm() : NULL;
    case OFFLOAD_AEAD_AES_256_GCM: return key_length == 32 ? EVP_aes_256_gcm() : NULL;
    case OFFLOAD_AEAD_CHACHA20_POLY1305: return key_length == 32 ? EVP_chacha20_poly1305() : NULL;
    default: return NULL;
    }
}

offload_aead *offload_aead_new(int algorithm, const uint8_t *key, size_t key_length, int encrypt) {
    const EVP_CIPHER *cipher = cipher_for(algorithm, key_length);
    if (!cipher) return NULL;
    offload_aead *a = OPENSSL_zalloc(sizeof *a);
    if (!a) return NULL;
    a->ctx = EVP_CIPHER_CTX_new();
    a->encrypt = encrypt;
    // The key is set once (its schedule is kept); each packet then only sets its 12-byte nonce.
    if (!a->ctx || EVP_CipherInit_ex(a->ctx, cipher, NULL, NULL, NULL, encrypt) != 1
        || EVP_CIPHER_CTX_ctrl(a->ctx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) != 1
        || EVP_CipherInit_ex(a->ctx, NULL, NULL, key, NULL, encrypt) != 1) {
        offload_aead_free(a);
        return NULL;
    }
    return a;
}

void offload_aead_free(offload_aead *a) {
    if (!a) return;
    EVP_CIPHER_CTX_free(a->ctx);
    OPENSSL_free(a);
}

long offload_aead_seal(offload_aead *a, const uint8_t *nonce, const uint8_t *aad, size_t aad_length,
                       const offload_piece *pieces, int count, const uint8_t *trailer, size_t trailer_length,
                       uint8_t *out, uint8_t *tag) {
    if (!a->encrypt) return -1;
    int n = 0;
    long written = 0;
    if (EVP_EncryptInit_ex(a->ctx, NULL, NULL, NULL, nonce) != 1) return -1;
    if (aad_length > 0 && EVP_EncryptUpdate(a->ctx, NULL, &n, aad, (int)aad_length) != 1) return -1;
    for (int i = 0; i < count; i++) {
        if (pieces[i].length == 0) continue;
        if (EVP_EncryptUpdate(a->ctx, out + written, &n, pieces[i].base, (int)pieces[i].length) != 1) return -1;
        written += n;
    }
    if (trailer_length > 0) {
        if (EVP_EncryptUpdate(a->ctx, out + written, &n, trailer, (int)trailer_length) != 1) return -1;
        written += n;
    }
    if (EVP_EncryptFinal_ex(a->ctx, out + written, &n) != 1) return -1;
    written += n;
    if (EVP_CIPHER_CTX_ctrl(a->ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) != 1) return -1;
    return written;
}

int offload_aead_open(offload_aead *a, const uint8_t *nonce, const uint8_t *aad, size_t aad_length,
                      uint8_t *data, size_t length, const uint8_t *tag) {
    if (a->encrypt) return -1;
    int n = 0;
    if (EVP_DecryptInit_ex(a->ctx, NULL, NULL, NULL, nonce) != 1) return -1;
    if (aad_length > 0 && EVP_DecryptUpdate(a->ctx, NULL, &n, aad, (int)aad_length) != 1) return -1;
    if (length > 0 && EVP_DecryptUpdate(a->ctx, data, &n, data, (int)length) != 1) return -1;
    if (EVP_CIPHER_CTX_ctrl(a->ctx, EVP_CTRL_AEAD_SET_TAG, 16, (void *)tag) != 1) return -1;
    uint8_t end[16];
    return EVP_DecryptFinal_ex(a->ctx, end, &n) == 1 ? 1 : 0;
}

int offload_sha256(const void *data, size_t length, uint8_t *digest) {
    return EVP_Digest(data, length, digest, NULL, EVP_sha256(), NULL) == 1;
}

int offload_constant_time_compare(const void *a, const void *b, size_t length) {
    return CRYPTO_memcmp(a, b, length);
}

int offload_random_bytes(uint8_t *buffer, size_t length) {
    return RAND_bytes(buffer, (int)length) == 1;
}

// ---- IKEv2: HMAC (the PRF) and key exchange. Every function reports libcrypto's result. ----
#include <openssl/core_names.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <string.h>

size_t offload_hmac(int digest, const void *key, size_t key_length, const void *data, size_t length, uint8_t *out) {
    const EVP_MD *md = digest == 256 ? EVP_sha256() : digest == 384 ? EVP_sha384() : NULL;
    if (!md) return 0;
    unsigned int written = 0;
    // HMAC() with a zero-length key needs a non-NULL pointer.
    static const uint8_t empty = 0;
    if (!HMAC(md, key_length ? key : &empty, (int)key_length, data, length, out, &written)) return 0;
    return written;
}

struct offload_ke {
    int group;
    EVP_PKEY *key;
};

offload_ke *offload_ke_new(int group) {
    EVP_PKEY_CTX *ctx = NULL;
    if (group == OFFLOAD_KE_CURVE25519) {
        ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL);
    } else if (group == OFFLOAD_KE_MODP_2048) {
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "DH", NULL);
    } else {
        return NULL;
    }
    if (!ctx) return NULL;
    offload_ke *ke = OPENSSL_zalloc(sizeof *ke);
    int ok = ke && EVP_PKEY_keygen_init(ctx) == 1;
    if (ok && group == OFFLOAD_KE_MODP_2048) {
        // RFC 3526's 2048-bit MODP group, by its name in OpenSSL 3.
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, "modp_2048", 0),
            OSSL_PARAM_construct_end(),
        };
        ok = EVP_PKEY_CTX_set_params(ctx, params) == 1;
    }
    if (ok) ok = EVP_PKEY_keygen(ctx, &ke->key) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        offload_ke_free(ke);
        return NULL;
    }
    ke->group = group;
    return ke;
}

void offload_ke_free(offload_ke *ke) {
    if (!ke) return;
    EVP_PKEY_free(ke->key);
    OPENSSL_free(ke);
}

size_t offload_ke_public(offload_ke *ke, uint8_t *out, size_t capacity) {
    if (ke->group == OFFLOAD_KE_CURVE25519) {
        size_t length = capacity;
        if (capacity < 32 || EVP_PKEY_get_raw_public_key(ke->key, out, &length) != 1) return 0;
        return length;
    }
    BIGNUM *pub = NULL;
    if (capacity < 256 || EVP_PKEY_get_bn_param(ke->key, OSSL_PKEY_PARAM_PUB_KEY, &pub) != 1) return 0;
    int ok = BN_bn2binpad(pub, out, 256) == 256;
    BN_free(pub);
    return ok ? 256 : 0;
}

/// The peer's public value as a key of the same group (NULL when invalid).
static EVP_PKEY *peer_key(offload_ke *ke, const uint8_t *peer, size_t peer_length) {
    if (ke->group == OFFLOAD_KE_CURVE25519) {
        if (peer_length != 32) return NULL;
        return EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer, peer_length);
    }
    if (peer_length != 256) return NULL;
    EVP_PKEY *result = NULL;
    BIGNUM *pub = BN_bin2bn(peer, (int)peer_length, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "DH", NULL);
    if (pub && bld && ctx
        && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "modp_2048", 0) == 1
        && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PUB_KEY, pub) == 1
        && (params = OSSL_PARAM_BLD_to_param(bld)) != NULL
        && EVP_PKEY_fromdata_init(ctx) == 1) {
        if (EVP_PKEY_fromdata(ctx, &result, EVP_PKEY_PUBLIC_KEY, params) != 1) result = NULL;
    }
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    BN_free(pub);
    return result;
}

size_t offload_ke_shared(offload_ke *ke, const uint8_t *peer, size_t peer_length, uint8_t *out, size_t capacity) {
    EVP_PKEY *other = peer_key(ke, peer, peer_length);
    if (!other) return 0;
    size_t length = 0, result = 0;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(ke->key, NULL);
    // EVP_PKEY_derive_set_peer validates the peer's value (range for DH; X25519 rejects an
    // all-zero shared secret in derive).
    if (ctx && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer(ctx, other) == 1
        && EVP_PKEY_derive(ctx, NULL, &length) == 1 && length <= capacity) {
        uint8_t buffer[512];
        size_t got = sizeof buffer;
        if (length <= sizeof buffer && EVP_PKEY_derive(ctx, buffer, &got) == 1) {
            size_t width = ke->group == OFFLOAD_KE_MODP_2048 ? 256 : got;
            if (got <= width && width <= capacity) {
                // DH's secret is left-padded with zeros to the prime's length (RFC 7296 §2.14).
                memset(out, 0, width - got);
                memcpy(out + (width - got), buffer, got);
                result = width;
            }
        }
        OPENSSL_cleanse(buffer, sizeof buffer);
    }
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(other);
    return result;
}

int offload_sha1(const void *data, size_t length, uint8_t *digest) {
    return EVP_Digest(data, length, digest, NULL, EVP_sha1(), NULL) == 1;
}

// ---- Keeping keys out of places they must not reach: see offload_crypto.h. ----
#include <errno.h>
#include <sys/prctl.h>
#include <sys/resource.h>

void offload_cleanse(void *buffer, size_t length) {
    if (buffer != NULL && length > 0) OPENSSL_cleanse(buffer, length);
}

int offload_disable_core_dumps(void) {
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0) return -errno;
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return -errno;
    return 0;
}

int offload_dumpable(void) {
    int n = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    return n < 0 ? -errno : n;
}
