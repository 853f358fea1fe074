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
