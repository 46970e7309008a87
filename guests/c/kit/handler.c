// Test handler for the C recipe, written against natsapp.h. A JSON payload
// is an operation of the SDK semantics test ({"op": "raise" | "reject" |
// "retry" | "denied" | "publish" | "respond" | "ack" | "info", …}); a text payload is a
// command whose result goes to testkit.out.c:
//   kv BUCKET KEY VALUE  create KEY if absent, then read it back
//   http URL             GET URL

#include "natsapp.h"
#include "natsapp_http.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The value of "key" in a flat JSON object: where it starts and how long it
// is (a string without its quotes, or a number or object as written).
static bool json_field(const char *json, const char *key, const char **start, size_t *len) {
    char quoted[64];
    snprintf(quoted, sizeof quoted, "\"%s\"", key);
    const char *p = strstr(json, quoted);
    if (!p) return false;
    p += strlen(quoted);
    while (*p == ' ' || *p == ':') p++;
    if (*p == '"') {
        const char *end = strchr(p + 1, '"');
        if (!end) return false;
        *start = p + 1;
        *len = (size_t)(end - p - 1);
        return true;
    }
    const char *end = p;
    int depth = 0;
    while (*end && (depth > 0 || (*end != ',' && *end != '}'))) {
        if (*end == '{' || *end == '[') depth++;
        if (*end == '}' || *end == ']') depth--;
        end++;
    }
    *start = p;
    *len = (size_t)(end - p);
    return true;
}

static void field_text(const char *json, const char *key, char *out, size_t size) {
    const char *start;
    size_t len;
    if (!json_field(json, key, &start, &len)) len = 0, start = "";
    snprintf(out, size, "%.*s", (int)len, start);
}

static void report(const char *subject, const char *text) {
    natsapp_error_t err;
    natsapp_publish(subject, text, strlen(text), NULL, &err);
}

static natsapp_result_t operation(const char *json, size_t len, natsapp_msg_t *msg) {
    char op[32], text[512];
    field_text(json, "op", op, sizeof op);
    natsapp_error_t err;
    if (strcmp(op, "raise") == 0) {
        // C has no exceptions: natsapp_crash ends the call as an uncaught one does.
        field_text(json, "message", text, sizeof text);
        char what[600];
        snprintf(what, sizeof what, "error: %s", text);
        natsapp_crash(what);
    }
    if (strcmp(op, "reject") == 0) {
        field_text(json, "reason", text, sizeof text);
        return natsapp_reject(text);
    }
    if (strcmp(op, "retry") == 0) {
        field_text(json, "delay_ms", text, sizeof text);
        return natsapp_retry("asked to retry", atoll(text));
    }
    if (strcmp(op, "denied") == 0) {
        field_text(json, "subject", text, sizeof text);
        if (!natsapp_publish(text, "x", 1, NULL, &err)) return natsapp_error_result(&err);
        return natsapp_ok();
    }
    if (strcmp(op, "publish") == 0) {
        char subject[256];
        field_text(json, "subject", subject, sizeof subject);
        field_text(json, "data", text, sizeof text);
        natsapp_publish_ack_t ack;
        if (!natsapp_publish(subject, text, strlen(text), &ack, &err)) return natsapp_error_result(&err);
        char out[512];
        snprintf(out, sizeof out, "{\"stream\": \"%s\", \"sequence\": %" PRIu64 ", \"duplicate\": %s}", ack.stream,
                 ack.sequence, ack.duplicate ? "true" : "false");
        report("testkit.out.publish", out);
        return natsapp_ok();
    }
    if (strcmp(op, "later") == 0) {
        char subject[256], delay[32], ttl[32], out[512];
        field_text(json, "subject", subject, sizeof subject);
        field_text(json, "data", text, sizeof text);
        field_text(json, "delay_ms", delay, sizeof delay);
        field_text(json, "ttl_ms", ttl, sizeof ttl);
        natsapp_publish_ack_t ack;
        if (natsapp_publish_later(subject, text, strlen(text), NULL, strtoull(delay, NULL, 10), strtoull(ttl, NULL, 10),
                                  &ack, &err))
            snprintf(out, sizeof out, "{\"stream\": \"%s\"}", ack.stream);
        else {
            for (char *c = err.message; *c; c++)
                if (*c == '"' || *c == '\\') *c = '\'';
            snprintf(out, sizeof out, "{\"error\": \"%s\"}", err.message);
        }
        report("testkit.out.later", out);
        return natsapp_ok();
    }
    if (strcmp(op, "respond") == 0) {
        field_text(json, "data", text, sizeof text);
        const char *headers[] = {"X-Answered-By", "c", NULL};
        if (!natsapp_msg_respond(msg, text, strlen(text), headers, &err)) return natsapp_error_result(&err);
        return natsapp_ok();
    }
    if (strcmp(op, "ack") == 0) {
        if (!natsapp_msg_ack(msg, &err)) return natsapp_error_result(&err);
        natsapp_crash("error: failing after my own ack");
    }
    if (strcmp(op, "info") == 0) {
        char subject[256], trace[128] = "", region[64] = "", out[1024];
        natsapp_msg_subject(msg, subject, sizeof subject);
        natsapp_msg_header(msg, "X-Trace", trace, sizeof trace);
        natsapp_config("region", region, sizeof region);
        natsapp_delivery_t d;
        natsapp_msg_delivery(msg, &d);
        snprintf(out, sizeof out,
                 "{\"subject\": \"%s\", \"trace\": \"%s\", \"delivered\": %" PRIu32
                 ", \"stream\": \"%s\", \"region\": \"%s\", \"data\": %.*s}",
                 subject, trace, d.delivered, d.stream, region, (int)len, json);
        report("testkit.out.info", out);
        return natsapp_ok();
    }
    return natsapp_reject("unknown operation");
}

static void key_value(char *bucket_name, char *key_name, char *value_text, char *out, size_t n);

natsapp_result_t natsapp_handle(const uint8_t *data, size_t len, natsapp_msg_t *msg) {
    natsapp_kv_change_t change;
    if (natsapp_msg_kv(msg, &change)) {
        // A watched bucket's change: reported, then its value run as an op.
        char out[1200];
        snprintf(out, sizeof out, "{\"key\": \"%s\", \"operation\": \"%s\", \"revision\": %" PRIu64 "}", change.key,
                 natsapp_kv_operation_name(change.operation), change.revision);
        report("testkit.out.kvchange", out);
        if (len == 0) return natsapp_ok();
    }
    char command[1024];
    size_t n = len < sizeof command - 1 ? len : sizeof command - 1;
    memcpy(command, data, n);
    command[n] = 0;
    if (command[0] == '{') return operation(command, n, msg);

    char result[1024] = "";
    char *op = strtok(command, " ");
    if (op && strcmp(op, "kv") == 0) {
        char *bucket = strtok(NULL, " "), *key = strtok(NULL, " "), *value = strtok(NULL, " ");
        key_value(bucket ? bucket : "", key ? key : "", value ? value : "", result, sizeof result);
    } else if (op && strcmp(op, "http") == 0) {
        char *url = strtok(NULL, " ");
        natsapp_http_response_t resp;
        if (natsapp_http_request("GET", url ? url : "", NULL, 0, NULL, &resp)) {
            snprintf(result, sizeof result, "status=%u body=%.*s", resp.status, (int)resp.body.len,
                     (const char *)resp.body.ptr);
            handler_sdk_list_u8_free(&resp.body);
        } else {
            snprintf(result, sizeof result, "error=%s", resp.error);
        }
    } else {
        return natsapp_reject("unknown command");
    }
    report("testkit.out.c", result);
    return natsapp_ok();
}

// Key-value through the generated bindings (natsapp.h has no key-value helpers).
static void error_text(const natsapp_handler_keyvalue_error_t *err, char *out, size_t n) {
    const handler_sdk_string_t *s = err->tag == NATSAPP_HANDLER_TYPES_ERROR_TIMEOUT ? NULL : &err->val.denied;
    snprintf(out, n, "error %d: %.*s", err->tag, s ? (int)s->len : 0, s ? (const char *)s->ptr : "");
}

static void key_value(char *bucket_name, char *key_name, char *value_text, char *out, size_t n) {
    handler_sdk_string_t bucket, key;
    handler_sdk_string_set(&bucket, bucket_name);
    handler_sdk_string_set(&key, key_name);
    handler_sdk_list_u8_t value = {(uint8_t *)value_text, strlen(value_text)};
    handler_sdk_option_u64_t created;
    natsapp_handler_keyvalue_error_t err;
    if (!natsapp_handler_keyvalue_create(&bucket, &key, &value, &created, &err)) {
        error_text(&err, out, n);
        natsapp_handler_types_error_free(&err);
        return;
    }
    natsapp_handler_keyvalue_option_entry_t entry;
    if (!natsapp_handler_keyvalue_get(&bucket, &key, &entry, &err)) {
        error_text(&err, out, n);
        natsapp_handler_types_error_free(&err);
        return;
    }
    char won[32] = "none";
    if (created.is_some) snprintf(won, sizeof won, "%" PRIu64, created.val);
    if (entry.is_some) {
        snprintf(out, n, "created=%s value=%.*s revision=%" PRIu64, won, (int)entry.val.value.len,
                 (const char *)entry.val.value.ptr, entry.val.revision);
        handler_sdk_list_u8_free(&entry.val.value);
    } else {
        snprintf(out, n, "created=%s value=none", won);
    }
}
