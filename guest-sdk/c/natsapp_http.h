// Outbound HTTP for C handlers: one blocking call over wasi:http, to an
// origin the subscriber is granted (service.toml `http = [...]`).
#ifndef NATSAPP_HTTP_H
#define NATSAPP_HTTP_H

#include "handler_sdk.h"

typedef struct {
    // The status code, 0 when no response came.
    uint16_t status;
    // The whole body (free with handler_sdk_list_u8_free).
    handler_sdk_list_u8_t body;
    // Why no response came: "denied: …" naming the rule for a request the
    // runtime refused, else wasi:http's error code; empty when status > 0.
    char error[512];
} natsapp_http_response_t;

// Sends `method` ("GET", "POST", …) to `url` ("https://host[:port]/path")
// with `body` (may be NULL) and `content_type` (may be NULL); fills `out`.
// Returns true when a response came.
bool natsapp_http_request(const char *method, const char *url, const uint8_t *body, size_t body_len,
                          const char *content_type, natsapp_http_response_t *out);

#endif
