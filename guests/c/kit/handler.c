// Test handler for the C recipe. The payload is a command:
//   kv BUCKET KEY VALUE  create KEY if absent, then read it back
//   http URL             GET URL
// and the result goes to testkit.out.c as text.

#include "handler_sdk.h"
#include "natsapp_http.h"
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void report(const char *text) {
    handler_sdk_string_t subject;
    handler_sdk_string_set(&subject, "testkit.out.c");
    handler_sdk_list_u8_t data = {(uint8_t *)text, strlen(text)};
    natsapp_handler_publisher_headers_t headers = {NULL, 0};
    natsapp_handler_publisher_option_publish_ack_t ack;
    natsapp_handler_publisher_error_t err;
    if (natsapp_handler_publisher_publish(&subject, &data, &headers, &ack, &err)) {
        natsapp_handler_publisher_option_publish_ack_free(&ack);
    } else {
        natsapp_handler_publisher_error_free(&err);
    }
}

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

bool exports_natsapp_handler_handler_handle(handler_sdk_list_u8_t *data,
                                            exports_natsapp_handler_handler_borrow_message_t msg,
                                            exports_natsapp_handler_handler_handle_error_t *err) {
    char command[1024];
    size_t len = data->len < sizeof command - 1 ? data->len : sizeof command - 1;
    memcpy(command, data->ptr, len);
    command[len] = 0;
    handler_sdk_list_u8_free(data);
    // The message is lent for this call only: give it back before returning.
    natsapp_handler_types_message_drop_borrow(msg);

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
        err->tag = EXPORTS_NATSAPP_HANDLER_HANDLER_HANDLE_ERROR_REJECT;
        handler_sdk_string_dup(&err->val.reject, "unknown command");
        return false;
    }
    report(result);
    return true;
}
