#ifndef CCRYPTO_SHIM_H
#define CCRYPTO_SHIM_H

#include <openssl/opensslv.h>
#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <string.h>

/// Creates an HMAC context keyed once with `key`, for the digest named `digest` ("SHA1", "SHA256", "SHA512").
/// Re-initialise it with `EVP_MAC_init(ctx, NULL, 0, NULL)` to reuse the key. Returns NULL on failure.
static inline EVP_MAC_CTX *CCrypto_hmac_context_new(const char *digest, const void *key, size_t key_length) {
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL) { return NULL; }
    EVP_MAC_CTX *context = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);
    if (context == NULL) { return NULL; }
    OSSL_PARAM params[2];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_init(context, (const unsigned char *)key, key_length, params) != 1) {
        EVP_MAC_CTX_free(context);
        return NULL;
    }
    return context;
}


/// HMAC (RFC 2104) over EVP digests with the key's padded blocks absorbed once: `inner` and `outer` hold the
/// digest states after `key ^ ipad` and `key ^ opad`, and each message starts from a copy of them. This is
/// the same construction as libcrypto's HMAC, minus its per-message re-initialisation of an EVP_MAC.
typedef struct CCrypto_hmac {
    EVP_MD_CTX *inner;
    EVP_MD_CTX *outer;
    EVP_MD_CTX *work;
    unsigned int size;
} CCrypto_hmac;

static inline void CCrypto_hmac_free(CCrypto_hmac *state) {
    if (state == NULL) { return; }
    EVP_MD_CTX_free(state->inner);
    EVP_MD_CTX_free(state->outer);
    EVP_MD_CTX_free(state->work);
    OPENSSL_free(state);
}

static inline CCrypto_hmac *CCrypto_hmac_allocate(void) {
    CCrypto_hmac *state = OPENSSL_zalloc(sizeof(CCrypto_hmac));
    if (state == NULL) { return NULL; }
    state->inner = EVP_MD_CTX_new();
    state->outer = EVP_MD_CTX_new();
    state->work = EVP_MD_CTX_new();
    if (state->inner == NULL || state->outer == NULL || state->work == NULL) { CCrypto_hmac_free(state); return NULL; }
    return state;
}

/// Prepares HMAC with the digest named `digest` ("SHA1", "SHA256", "SHA512") and `key`. NULL on failure.
static inline CCrypto_hmac *CCrypto_hmac_new(const char *digest, const void *key, size_t key_length) {
    EVP_MD *md = EVP_MD_fetch(NULL, digest, NULL);
    if (md == NULL) { return NULL; }
    int block = EVP_MD_get_block_size(md);
    int size = EVP_MD_get_size(md);
    unsigned char padded[EVP_MAX_MD_SIZE > 128 ? EVP_MAX_MD_SIZE : 128];
    unsigned char pad[128];
    CCrypto_hmac *state = NULL;
    if (block <= 0 || block > 128 || size <= 0) { goto done; }
    memset(padded, 0, sizeof(padded));
    if (key_length > (size_t)block) {
        unsigned int hashed = 0;
        if (EVP_Digest(key, key_length, padded, &hashed, md, NULL) != 1) { goto done; }
    } else if (key_length > 0) {
        memcpy(padded, key, key_length);
    }
    state = CCrypto_hmac_allocate();
    if (state == NULL) { goto done; }
    state->size = (unsigned int)size;
    for (int i = 0; i < block; i++) { pad[i] = padded[i] ^ 0x36; }
    int ok = EVP_DigestInit_ex2(state->inner, md, NULL) == 1 && EVP_DigestUpdate(state->inner, pad, (size_t)block) == 1;
    for (int i = 0; i < block; i++) { pad[i] = padded[i] ^ 0x5c; }
    ok = ok && EVP_DigestInit_ex2(state->outer, md, NULL) == 1 && EVP_DigestUpdate(state->outer, pad, (size_t)block) == 1;
    if (!ok) { CCrypto_hmac_free(state); state = NULL; }
done:
    OPENSSL_cleanse(padded, sizeof(padded));
    OPENSSL_cleanse(pad, sizeof(pad));
    EVP_MD_free(md);
    return state;
}

/// A private copy of `state`, for another thread.
static inline CCrypto_hmac *CCrypto_hmac_dup(const CCrypto_hmac *state) {
    CCrypto_hmac *copy = CCrypto_hmac_allocate();
    if (copy == NULL) { return NULL; }
    copy->size = state->size;
    if (EVP_MD_CTX_copy_ex(copy->inner, state->inner) != 1 || EVP_MD_CTX_copy_ex(copy->outer, state->outer) != 1) {
        CCrypto_hmac_free(copy);
        return NULL;
    }
    return copy;
}

/// Starts a message. 1 on success.
static inline int CCrypto_hmac_begin(CCrypto_hmac *state) {
    return EVP_MD_CTX_copy_ex(state->work, state->inner);
}

/// Appends message bytes. 1 on success.
static inline int CCrypto_hmac_update(CCrypto_hmac *state, const void *bytes, size_t length) {
    return EVP_DigestUpdate(state->work, bytes, length);
}

/// Finishes the message into `out` (`state->size` bytes). 1 on success.
static inline int CCrypto_hmac_finish(CCrypto_hmac *state, unsigned char *out) {
    unsigned char inner[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    int ok = EVP_DigestFinal_ex(state->work, inner, &length) == 1
        && EVP_MD_CTX_copy_ex(state->work, state->outer) == 1
        && EVP_DigestUpdate(state->work, inner, length) == 1
        && EVP_DigestFinal_ex(state->work, out, &length) == 1
        && length == state->size;
    OPENSSL_cleanse(inner, sizeof(inner));
    return ok;
}

/// Code length in bytes.
static inline unsigned int CCrypto_hmac_size(const CCrypto_hmac *state) { return state->size; }

/// `OPENSSL_cleanse` is a function, but keep every wipe behind one name.
static inline void CCrypto_cleanse(void *pointer, size_t length) { OPENSSL_cleanse(pointer, length); }

#endif
