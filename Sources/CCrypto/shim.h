#ifndef CCRYPTO_SHIM_H
#define CCRYPTO_SHIM_H

#include <openssl/opensslv.h>
#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

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

/// `OPENSSL_cleanse` is a function, but keep every wipe behind one name.
static inline void CCrypto_cleanse(void *pointer, size_t length) { OPENSSL_cleanse(pointer, length); }

#endif
