// Write natsapp-wasm handlers in C without the component model's memory
// rules: implement natsapp_handle() and this file's helpers do the rest —
// the payload is yours for the call, the lent message is given back before
// returning (a borrow left over traps), and every list and string the
// runtime returns is freed here; what you read is copied into your buffers.
//
//   #include "natsapp.h"
//
//   natsapp_result_t natsapp_handle(const uint8_t *data, size_t len, natsapp_msg_t *msg) {
//       if (len == 0) return natsapp_reject("an order needs a body");          // term (+ dead letter)
//       natsapp_error_t err;
//       if (!natsapp_publish("order.status", data, len, NULL, &err))
//           return natsapp_error_result(&err);                               // denied/invalid: reject, else retry
//       return natsapp_ok();                                                 // ack
//   }
//
// Build: ./build.sh (wit-bindgen 0.63, clang-14 with wasi-libc, wasm-tools and
// wasmtime's reactor adapter; `natsapp-wasm new --lang c` sets it up).
#ifndef NATSAPP_H
#define NATSAPP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// How a runtime call failed: the WIT error kinds.
typedef enum {
    NATSAPP_DENIED = 0,       // not allowed (the message names the rule), or already settled
    NATSAPP_TIMEOUT = 1,      // no answer in time
    NATSAPP_UNAVAILABLE = 2,  // NATS cannot serve it now; later may work
    NATSAPP_INVALID = 3,      // bad arguments
    NATSAPP_OTHER = 4,
} natsapp_error_kind_t;

typedef struct {
    natsapp_error_kind_t kind;
    char message[512];  // "denied: …", "timeout", … (cut to fit)
} natsapp_error_t;

// What natsapp_handle decided.
typedef struct {
    enum { NATSAPP_OK, NATSAPP_RETRY, NATSAPP_REJECT } outcome;
    int64_t delay_ms;  // a retry's delay; -1: the subscriber's backoff
    char reason[512];
} natsapp_result_t;

natsapp_result_t natsapp_ok(void);
// Never redeliver: term, and a dead-letter copy when configured.
natsapp_result_t natsapp_reject(const char *reason);
// Deliver again, after delay_ms (-1: the configured backoff).
natsapp_result_t natsapp_retry(const char *reason, int64_t delay_ms);
// A failed call's result: denied or invalid reject (retrying cannot help), the rest retry.
natsapp_result_t natsapp_error_result(const natsapp_error_t *err);

// Ends the call as an uncaught exception does in Python or JavaScript (and a
// panic in Rust): a failure with cause `panic`, `what` in the log and the
// statistics, the message redelivered with backoff.
_Noreturn void natsapp_crash(const char *what);

// The delivery being handled, valid during natsapp_handle only.
typedef struct natsapp_msg natsapp_msg_t;

// The handler: implement it. `data` is valid during the call.
natsapp_result_t natsapp_handle(const uint8_t *data, size_t len, natsapp_msg_t *msg);

// Text getters copy into `out` (NUL-terminated, cut to `size`) and return the full length.
size_t natsapp_msg_subject(natsapp_msg_t *msg, char *out, size_t size);
// The first value of header `name`; false when absent.
bool natsapp_msg_header(natsapp_msg_t *msg, const char *name, char *out, size_t size);
// Where the publisher wants an answer: a request's reply subject (an
// endpoint's message), else its Reply-To header; false when none.
bool natsapp_msg_reply(natsapp_msg_t *msg, char *out, size_t size);
// Answers the message on its reply address, once; `headers` is NULL or
// "Name", "value", …, NULL. False with `err` when refused.
bool natsapp_msg_respond(natsapp_msg_t *msg, const void *data, size_t len, const char *const *headers,
                         natsapp_error_t *err);

typedef struct {
    char stream[256];
    char consumer[256];
    uint64_t stream_sequence, consumer_sequence, pending, published_unix_ns;
    uint32_t delivered;
} natsapp_delivery_t;
void natsapp_msg_delivery(natsapp_msg_t *msg, natsapp_delivery_t *out);

// With watch = { kv = … }: which key changed, how, and the change's revision
// (what natsapp_kv_update compares). A bucket is the stream KV_<bucket> whose
// subjects are $KV.<bucket>.<key>.
typedef enum { NATSAPP_KV_PUT, NATSAPP_KV_DELETE, NATSAPP_KV_PURGE } natsapp_kv_operation_t;
typedef struct {
    char key[1024];  // NUL-terminated, cut to 1023 bytes
    natsapp_kv_operation_t operation;
    uint64_t revision;
} natsapp_kv_change_t;
// False for a message of any other stream.
bool natsapp_msg_kv(natsapp_msg_t *msg, natsapp_kv_change_t *out);
// "put", "delete" or "purge".
const char *natsapp_kv_operation_name(natsapp_kv_operation_t op);

// Settle it yourself (the runtime then adds nothing); false with `err` when refused.
// With outputs.mode = "atomic", ack and nak take effect when handle returns (an ack after the commit).
bool natsapp_msg_ack(natsapp_msg_t *msg, natsapp_error_t *err);
bool natsapp_msg_nak(natsapp_msg_t *msg, int64_t delay_ms, natsapp_error_t *err);  // -1: backoff
bool natsapp_msg_term(natsapp_msg_t *msg, const char *reason, natsapp_error_t *err);  // reason may be NULL
bool natsapp_msg_in_progress(natsapp_msg_t *msg, natsapp_error_t *err);

// The PubAck of a publish to a subject a stream captures.
typedef struct {
    bool stored;  // false: a core publish (no stream), or held until the commit (outputs.mode = "atomic")
    char stream[256];
    uint64_t sequence;
    bool duplicate;
} natsapp_publish_ack_t;

// Publishes `len` bytes; `headers` is NULL or "Name", "value", …, NULL; `ack` may be NULL.
bool natsapp_publish(const char *subject, const void *data, size_t len, natsapp_publish_ack_t *ack,
                     natsapp_error_t *err);
bool natsapp_publish_with_headers(const char *subject, const void *data, size_t len, const char *const *headers,
                                  natsapp_publish_ack_t *ack, natsapp_error_t *err);
// As natsapp_publish_with_headers, stored `delay_ms` from now (0: at once; 1000 or more, rounded up
// to the second) and kept `ttl_ms` (0: as the stream keeps messages; 1000 or more). The stream that
// captures `subject` must allow schedules (a delay: it also captures natsapp.delayed.>) or TTLs.
bool natsapp_publish_later(const char *subject, const void *data, size_t len, const char *const *headers,
                           uint64_t delay_ms, uint64_t ttl_ms, natsapp_publish_ack_t *ack, natsapp_error_t *err);
// Sends a request, waits up to timeout_ms; the reply is copied into `out` (cut to `size`), its
// length into `out_len`.
bool natsapp_request(const char *subject, const void *data, size_t len, const char *const *headers,
                     uint32_t timeout_ms, uint8_t *out, size_t size, size_t *out_len, natsapp_error_t *err);

// The subscriber's config value for `key`; false when not configured.
bool natsapp_config(const char *key, char *out, size_t size);

#endif
