// The helpers of natsapp.h over the bindings wit-bindgen generates
// (handler_sdk.h): each copies what the runtime returns and frees it.
#include "natsapp.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handler_sdk.h"

struct natsapp_msg {
    natsapp_handler_types_borrow_message_t handle;
};

static size_t copy_text(const uint8_t *text, size_t len, char *out, size_t size) {
    if (size > 0) {
        size_t n = len < size - 1 ? len : size - 1;
        memcpy(out, text, n);
        out[n] = 0;
    }
    return len;
}

// Drops a UTF-8 sequence that a cut at a buffer's end left incomplete: the
// runtime refuses a string that is not UTF-8.
static void trim_utf8(char *s) {
    size_t n = strlen(s), i = n;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--;
    if (i == 0) return;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t want = lead < 0x80 ? 1 : (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : 4;
    if (n - (i - 1) < want) s[i - 1] = 0;
}

static void set_result(natsapp_result_t *r, const char *reason) {
    snprintf(r->reason, sizeof r->reason, "%s", reason ? reason : "");
    trim_utf8(r->reason);
}

natsapp_result_t natsapp_ok(void) {
    natsapp_result_t r = {NATSAPP_OK, -1, ""};
    return r;
}

natsapp_result_t natsapp_reject(const char *reason) {
    natsapp_result_t r = {NATSAPP_REJECT, -1, ""};
    set_result(&r, reason);
    return r;
}

natsapp_result_t natsapp_retry(const char *reason, int64_t delay_ms) {
    natsapp_result_t r = {NATSAPP_RETRY, delay_ms, ""};
    set_result(&r, reason);
    return r;
}

void natsapp_crash(const char *what) {
    // The line the runtime reads the cause from (as the other SDKs write it).
    fprintf(stderr, "uncaught exception: %s\n", what);
    fflush(stderr);
    abort();
}

natsapp_result_t natsapp_error_result(const natsapp_error_t *err) {
    if (err->kind == NATSAPP_DENIED || err->kind == NATSAPP_INVALID) return natsapp_reject(err->message);
    return natsapp_retry(err->message, -1);
}

// Copies a host error into `err` (when given) and frees it.
static void take_error(natsapp_handler_types_error_t *e, natsapp_error_t *err) {
    static const char *const names[] = {"denied", "timeout", "unavailable", "invalid", "other"};
    if (err) {
        err->kind = (natsapp_error_kind_t)e->tag;
        if (e->tag == NATSAPP_HANDLER_TYPES_ERROR_TIMEOUT) {
            snprintf(err->message, sizeof err->message, "timeout");
        } else {
            handler_sdk_string_t *s = &e->val.denied;
            snprintf(err->message, sizeof err->message, "%s: %.*s", names[e->tag], (int)s->len,
                     (const char *)s->ptr);
            trim_utf8(err->message);
        }
    }
    natsapp_handler_types_error_free(e);
}

bool exports_natsapp_handler_handler_handle(handler_sdk_list_u8_t *data,
                                            exports_natsapp_handler_handler_borrow_message_t handle,
                                            exports_natsapp_handler_handler_handle_error_t *err) {
    natsapp_msg_t msg = {handle};
    natsapp_result_t r = natsapp_handle(data->ptr, data->len, &msg);
    handler_sdk_list_u8_free(data);
    // The message is lent for this call only: a borrow left over traps.
    natsapp_handler_types_message_drop_borrow(handle);
    switch (r.outcome) {
        case NATSAPP_OK:
            return true;
        case NATSAPP_REJECT:
            err->tag = EXPORTS_NATSAPP_HANDLER_HANDLER_HANDLE_ERROR_REJECT;
            handler_sdk_string_dup(&err->val.reject, r.reason);
            return false;
        default:
            err->tag = EXPORTS_NATSAPP_HANDLER_HANDLER_HANDLE_ERROR_RETRY;
            err->val.retry.delay_ms.is_some = r.delay_ms >= 0;
            err->val.retry.delay_ms.val = r.delay_ms >= 0 ? (uint64_t)r.delay_ms : 0;
            handler_sdk_string_dup(&err->val.retry.reason, r.reason);
            return false;
    }
}

size_t natsapp_msg_subject(natsapp_msg_t *msg, char *out, size_t size) {
    handler_sdk_string_t s;
    natsapp_handler_types_method_message_subject(msg->handle, &s);
    size_t len = copy_text(s.ptr, s.len, out, size);
    handler_sdk_string_free(&s);
    return len;
}

bool natsapp_msg_reply(natsapp_msg_t *msg, char *out, size_t size) {
    handler_sdk_string_t s;
    if (!natsapp_handler_types_method_message_reply(msg->handle, &s)) return false;
    copy_text(s.ptr, s.len, out, size);
    handler_sdk_string_free(&s);
    return true;
}

bool natsapp_msg_header(natsapp_msg_t *msg, const char *name, char *out, size_t size) {
    natsapp_handler_types_headers_t headers;
    natsapp_handler_types_method_message_headers(msg->handle, &headers);
    bool found = false;
    for (size_t i = 0; i < headers.len && !found; i++) {
        handler_sdk_string_t *n = &headers.ptr[i].f0, *v = &headers.ptr[i].f1;
        if (n->len == strlen(name) && memcmp(n->ptr, name, n->len) == 0) {
            copy_text(v->ptr, v->len, out, size);
            found = true;
        }
    }
    natsapp_handler_types_headers_free(&headers);
    return found;
}

void natsapp_msg_delivery(natsapp_msg_t *msg, natsapp_delivery_t *out) {
    natsapp_handler_types_delivery_t d;
    natsapp_handler_types_method_message_delivery(msg->handle, &d);
    copy_text(d.stream.ptr, d.stream.len, out->stream, sizeof out->stream);
    copy_text(d.consumer.ptr, d.consumer.len, out->consumer, sizeof out->consumer);
    out->stream_sequence = d.stream_sequence;
    out->consumer_sequence = d.consumer_sequence;
    out->delivered = d.delivered;
    out->pending = d.pending;
    out->published_unix_ns = d.published_unix_ns;
    natsapp_handler_types_delivery_free(&d);
}

bool natsapp_msg_kv(natsapp_msg_t *msg, natsapp_kv_change_t *out) {
    natsapp_delivery_t d;
    natsapp_msg_delivery(msg, &d);
    if (strncmp(d.stream, "KV_", 3) != 0) return false;
    char prefix[300];
    snprintf(prefix, sizeof prefix, "$KV.%s.", d.stream + 3);
    char subject[1400];
    natsapp_msg_subject(msg, subject, sizeof subject);
    size_t n = strlen(prefix);
    if (strncmp(subject, prefix, n) != 0) return false;
    copy_text((const uint8_t *)(subject + n), strlen(subject + n), out->key, sizeof out->key);
    char op[16];
    out->operation = NATSAPP_KV_PUT;
    if (natsapp_msg_header(msg, "KV-Operation", op, sizeof op)) {
        if (strcmp(op, "DEL") == 0) out->operation = NATSAPP_KV_DELETE;
        if (strcmp(op, "PURGE") == 0) out->operation = NATSAPP_KV_PURGE;
    }
    out->revision = d.stream_sequence;
    return true;
}

const char *natsapp_kv_operation_name(natsapp_kv_operation_t op) {
    switch (op) {
    case NATSAPP_KV_DELETE: return "delete";
    case NATSAPP_KV_PURGE: return "purge";
    default: return "put";
    }
}

bool natsapp_msg_ack(natsapp_msg_t *msg, natsapp_error_t *err) {
    natsapp_handler_types_error_t e;
    if (natsapp_handler_types_method_message_ack(msg->handle, &e)) return true;
    take_error(&e, err);
    return false;
}

bool natsapp_msg_nak(natsapp_msg_t *msg, int64_t delay_ms, natsapp_error_t *err) {
    natsapp_handler_types_error_t e;
    uint64_t delay = delay_ms >= 0 ? (uint64_t)delay_ms : 0;
    if (natsapp_handler_types_method_message_nak(msg->handle, delay_ms >= 0 ? &delay : NULL, &e)) return true;
    take_error(&e, err);
    return false;
}

bool natsapp_msg_term(natsapp_msg_t *msg, const char *reason, natsapp_error_t *err) {
    natsapp_handler_types_error_t e;
    handler_sdk_string_t r;
    if (reason) handler_sdk_string_set(&r, reason);
    if (natsapp_handler_types_method_message_term(msg->handle, reason ? &r : NULL, &e)) return true;
    take_error(&e, err);
    return false;
}

bool natsapp_msg_in_progress(natsapp_msg_t *msg, natsapp_error_t *err) {
    natsapp_handler_types_error_t e;
    if (natsapp_handler_types_method_message_in_progress(msg->handle, &e)) return true;
    take_error(&e, err);
    return false;
}

// Header pairs from "Name", "value", …, NULL (pointing into the caller's strings).
static natsapp_handler_types_headers_t header_list(const char *const *headers,
                                                   handler_sdk_tuple2_string_string_t *pairs, size_t max) {
    natsapp_handler_types_headers_t list = {pairs, 0};
    for (size_t i = 0; headers && headers[i] && headers[i + 1] && list.len < max; i += 2) {
        handler_sdk_string_set(&pairs[list.len].f0, headers[i]);
        handler_sdk_string_set(&pairs[list.len].f1, headers[i + 1]);
        list.len++;
    }
    return list;
}

#define MAX_HEADERS 32

bool natsapp_publish_with_headers(const char *subject, const void *data, size_t len, const char *const *headers,
                                  natsapp_publish_ack_t *ack, natsapp_error_t *err) {
    handler_sdk_string_t s;
    handler_sdk_string_set(&s, subject);
    handler_sdk_list_u8_t payload = {(uint8_t *)data, len};
    handler_sdk_tuple2_string_string_t pairs[MAX_HEADERS];
    natsapp_handler_types_headers_t list = header_list(headers, pairs, MAX_HEADERS);
    natsapp_handler_publisher_option_publish_ack_t got;
    natsapp_handler_types_error_t e;
    if (!natsapp_handler_publisher_publish(&s, &payload, &list, &got, &e)) {
        take_error(&e, err);
        return false;
    }
    if (ack) {
        ack->stored = got.is_some;
        ack->stream[0] = 0;
        ack->sequence = 0;
        ack->duplicate = false;
        if (got.is_some) {
            copy_text(got.val.stream.ptr, got.val.stream.len, ack->stream, sizeof ack->stream);
            ack->sequence = got.val.sequence;
            ack->duplicate = got.val.duplicate;
        }
    }
    natsapp_handler_publisher_option_publish_ack_free(&got);
    return true;
}

bool natsapp_publish_later(const char *subject, const void *data, size_t len, const char *const *headers,
                           uint64_t delay_ms, uint64_t ttl_ms, natsapp_publish_ack_t *ack, natsapp_error_t *err) {
    const char *all[2 * MAX_HEADERS + 1];
    size_t n = 0;
    for (size_t i = 0; headers && headers[i] && headers[i + 1] && n < 2 * (MAX_HEADERS - 2); i += 2) {
        all[n++] = headers[i];
        all[n++] = headers[i + 1];
    }
    char delay[32], ttl[32];
    if (delay_ms > 0) {
        snprintf(delay, sizeof delay, "%" PRIu64 "ms", delay_ms);
        all[n++] = "Natsapp-Delay";
        all[n++] = delay;
    }
    if (ttl_ms > 0) {
        snprintf(ttl, sizeof ttl, "%" PRIu64 "ms", ttl_ms);
        all[n++] = "Nats-TTL";
        all[n++] = ttl;
    }
    all[n] = NULL;
    return natsapp_publish_with_headers(subject, data, len, all, ack, err);
}

bool natsapp_publish(const char *subject, const void *data, size_t len, natsapp_publish_ack_t *ack,
                     natsapp_error_t *err) {
    return natsapp_publish_with_headers(subject, data, len, NULL, ack, err);
}

bool natsapp_request(const char *subject, const void *data, size_t len, const char *const *headers,
                     uint32_t timeout_ms, uint8_t *out, size_t size, size_t *out_len, natsapp_error_t *err) {
    handler_sdk_string_t s;
    handler_sdk_string_set(&s, subject);
    handler_sdk_list_u8_t payload = {(uint8_t *)data, len};
    handler_sdk_tuple2_string_string_t pairs[MAX_HEADERS];
    natsapp_handler_types_headers_t list = header_list(headers, pairs, MAX_HEADERS);
    natsapp_handler_publisher_response_t reply;
    natsapp_handler_types_error_t e;
    if (!natsapp_handler_publisher_request(&s, &payload, &list, timeout_ms, &reply, &e)) {
        take_error(&e, err);
        return false;
    }
    size_t n = reply.data.len < size ? reply.data.len : size;
    memcpy(out, reply.data.ptr, n);
    if (out_len) *out_len = reply.data.len;
    natsapp_handler_publisher_response_free(&reply);
    return true;
}

bool natsapp_msg_respond(natsapp_msg_t *msg, const void *data, size_t len, const char *const *headers,
                         natsapp_error_t *err) {
    handler_sdk_list_u8_t payload = {(uint8_t *)data, len};
    handler_sdk_tuple2_string_string_t pairs[MAX_HEADERS];
    natsapp_handler_types_headers_t list = header_list(headers, pairs, MAX_HEADERS);
    natsapp_handler_types_error_t e;
    if (natsapp_handler_types_method_message_respond(msg->handle, &payload, &list, &e)) return true;
    take_error(&e, err);
    return false;
}

bool natsapp_config(const char *key, char *out, size_t size) {
    handler_sdk_string_t k;
    handler_sdk_string_set(&k, key);
    handler_sdk_option_string_t value;
    wasi_config_store_error_t e;
    if (!wasi_config_store_get(&k, &value, &e)) {
        wasi_config_store_error_free(&e);
        return false;
    }
    if (!value.is_some) return false;
    copy_text(value.val.ptr, value.val.len, out, size);
    handler_sdk_string_free(&value.val);
    return true;
}
