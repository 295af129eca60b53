/* SPDX-License-Identifier: MIT */
/* Feeds arbitrary bytes to every parser identityd exposes to untrusted
 * input: the first byte picks the parser, the rest is the input.
 *   0: a compact JWS through full validation (with a fixed JWKS)
 *   1: a JWKS document
 *   2: an HTTP request head
 *   3: a single JWK object */
#include <stdint.h>

#include "identity-http.h"
#include "identity-validate.h"

static JwtKeySet *keys;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *s = NULL;
        uint8_t which;

        if (size < 1)
                return 0;
        which = data[0] % 4;
        data++;
        size--;
        s = malloc(size + 1);
        if (!s)
                return 0;
        memcpy(s, data, size);
        s[size] = 0;

        if (!keys) {
                /* One fixed P-256 public key, so kid lookups and signature
                 * checks run for inputs that name it. */
                const char *jwks = "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"k1\","
                                   "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
                                   "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}]}";
                if (jwt_keyset_parse(jwks, strlen(jwks), &keys) < 0)
                        abort();
        }

        switch (which) {
        case 0: {
                json_t *claims = NULL;
                char *msg = NULL;
                TokenRefusal why;
                (void) token_validate(s, keys, NULL,
                                      &(TokenPolicy){ .issuer = "https://i", .audience = "a", .now = 1700000000,
                                                      .leeway = 60, .allow_missing_kid = true },
                                      &claims, &why, &msg);
                json_decref(claims);
                free(msg);
                break;
        }
        case 1: {
                JwtKeySet *ks = NULL;
                if (jwt_keyset_parse(s, size, &ks) >= 0) {
                        json_t *j = NULL;
                        if (jwt_keyset_to_json(ks, &j) >= 0)
                                json_decref(j);
                }
                jwt_keyset_free(ks);
                break;
        }
        case 2: {
                /* The request parser is lib/http's (tests/fuzz/fuzz-http-request.c
                 * fuzzes it alone); this keeps the identity corpus's HTTP inputs useful. */
                HttpRequest req;
                if (http_request_parse(s, size, NULL, &req, NULL) == 0)
                        http_request_done(&req);
                break;
        }
        case 3: {
                json_t *o = json_loadb(s, size, 0, NULL);
                JwtKey *k = NULL;
                if (o && jwt_key_from_jwk(o, &k) >= 0) {
                        char *tp = NULL;
                        (void) jwt_key_thumbprint(k, &tp);
                        free(tp);
                }
                jwt_key_unref(k);
                json_decref(o);
                break;
        }
        }
        return 0;
}
