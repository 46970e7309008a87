// Outbound HTTP for C handlers over the wasi:http bindings wit-bindgen
// generates (world handler-sdk). Every resource is dropped before return,
// children before parents, as wasi:http requires.

#include "natsapp_http.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void describe(const wasi_http_types_error_code_t *code, char *out, size_t n) {
    if (code->tag == WASI_HTTP_TYPES_ERROR_CODE_INTERNAL_ERROR && code->val.internal_error.is_some) {
        const handler_sdk_string_t *s = &code->val.internal_error.val;
        snprintf(out, n, "%.*s", (int)s->len, (const char *)s->ptr);
    } else {
        snprintf(out, n, "wasi:http error code %d", code->tag);
    }
}

static void string_of(handler_sdk_string_t *s, const char *text, size_t len) {
    s->ptr = (uint8_t *)text;
    s->len = len;
}

bool natsapp_http_request(const char *method, const char *url, const uint8_t *body, size_t body_len,
                          const char *content_type, natsapp_http_response_t *out) {
    memset(out, 0, sizeof *out);
    wasi_http_types_scheme_t scheme;
    const char *rest;
    if (strncmp(url, "https://", 8) == 0) {
        scheme.tag = WASI_HTTP_TYPES_SCHEME_HTTPS;
        rest = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        scheme.tag = WASI_HTTP_TYPES_SCHEME_HTTP;
        rest = url + 7;
    } else {
        snprintf(out->error, sizeof out->error, "not an http or https URL: %s", url);
        return false;
    }
    size_t authority_len = strcspn(rest, "/?");
    // "host?q" means "/?q": the path starts with '/'.
    char path[2048];
    snprintf(path, sizeof path, "%s%s", rest[authority_len] == '/' ? "" : "/", rest + authority_len);

    wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
    if (content_type) {
        handler_sdk_string_t name;
        wasi_http_types_field_value_t value = {(uint8_t *)content_type, strlen(content_type)};
        string_of(&name, "content-type", 12);
        wasi_http_types_header_error_t herr;
        wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(headers), &name, &value, &herr);
    }
    wasi_http_types_own_outgoing_request_t request = wasi_http_types_constructor_outgoing_request(headers);
    wasi_http_types_borrow_outgoing_request_t req = wasi_http_types_borrow_outgoing_request(request);
    wasi_http_types_method_t m;
    memset(&m, 0, sizeof m);
    if (strcmp(method, "GET") == 0) m.tag = WASI_HTTP_TYPES_METHOD_GET;
    else if (strcmp(method, "POST") == 0) m.tag = WASI_HTTP_TYPES_METHOD_POST;
    else if (strcmp(method, "PUT") == 0) m.tag = WASI_HTTP_TYPES_METHOD_PUT;
    else if (strcmp(method, "DELETE") == 0) m.tag = WASI_HTTP_TYPES_METHOD_DELETE;
    else {
        m.tag = WASI_HTTP_TYPES_METHOD_OTHER;
        string_of(&m.val.other, method, strlen(method));
    }
    handler_sdk_string_t authority, path_with_query;
    string_of(&authority, rest, authority_len);
    string_of(&path_with_query, path, strlen(path));
    wasi_http_types_method_outgoing_request_set_method(req, &m);
    wasi_http_types_method_outgoing_request_set_scheme(req, &scheme);
    wasi_http_types_method_outgoing_request_set_authority(req, &authority);
    wasi_http_types_method_outgoing_request_set_path_with_query(req, &path_with_query);

    wasi_http_types_own_outgoing_body_t outgoing;
    wasi_http_types_method_outgoing_request_body(req, &outgoing);
    // Sent first, so the runtime reads the body while it is written: the
    // stream buffers little, and a larger body written before would wait
    // forever.
    wasi_http_types_error_code_t code;
    wasi_http_outgoing_handler_own_future_incoming_response_t future;
    if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &code)) {
        describe(&code, out->error, sizeof out->error);
        wasi_http_types_error_code_free(&code);
        wasi_http_types_outgoing_body_drop_own(outgoing);
        return false;
    }
    wasi_http_types_own_output_stream_t stream;
    wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(outgoing), &stream);
    for (size_t at = 0; at < body_len; at += 4096) {
        size_t n = body_len - at < 4096 ? body_len - at : 4096;
        handler_sdk_list_u8_t chunk = {(uint8_t *)body + at, n};
        wasi_io_streams_stream_error_t serr;
        if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
                wasi_io_streams_borrow_output_stream(stream), &chunk, &serr)) {
            break;
        }
    }
    wasi_io_streams_output_stream_drop_own(stream);
    if (!wasi_http_types_static_outgoing_body_finish(outgoing, NULL, &code)) {
        describe(&code, out->error, sizeof out->error);
        wasi_http_types_error_code_free(&code);
        wasi_http_types_future_incoming_response_drop_own(future);
        return false;
    }
    wasi_http_types_borrow_future_incoming_response_t f = wasi_http_types_borrow_future_incoming_response(future);
    wasi_http_types_own_pollable_t ready = wasi_http_types_method_future_incoming_response_subscribe(f);
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
    wasi_io_poll_pollable_drop_own(ready);
    wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
    bool some = wasi_http_types_method_future_incoming_response_get(f, &got);
    wasi_http_types_future_incoming_response_drop_own(future);
    if (!some || got.is_err) {
        snprintf(out->error, sizeof out->error, "no response");
        return false;
    }
    if (got.val.ok.is_err) {
        describe(&got.val.ok.val.err, out->error, sizeof out->error);
        wasi_http_types_error_code_free(&got.val.ok.val.err);
        return false;
    }
    wasi_http_types_own_incoming_response_t response = got.val.ok.val.ok;
    wasi_http_types_borrow_incoming_response_t resp = wasi_http_types_borrow_incoming_response(response);
    uint16_t status = wasi_http_types_method_incoming_response_status(resp);
    wasi_http_types_own_incoming_body_t incoming;
    wasi_http_types_method_incoming_response_consume(resp, &incoming);
    wasi_http_types_own_input_stream_t input;
    wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(incoming), &input);
    handler_sdk_list_u8_t all = {NULL, 0};
    bool complete = true;
    for (;;) {
        handler_sdk_list_u8_t chunk;
        wasi_io_streams_stream_error_t serr;
        if (!wasi_io_streams_method_input_stream_blocking_read(wasi_io_streams_borrow_input_stream(input), 65536,
                                                                &chunk, &serr)) {
            if (serr.tag != WASI_IO_STREAMS_STREAM_ERROR_CLOSED) {
                wasi_http_types_error_code_t why;
                if (wasi_http_types_http_error_code(wasi_io_error_borrow_error(serr.val.last_operation_failed), &why)) {
                    describe(&why, out->error, sizeof out->error);
                    wasi_http_types_error_code_free(&why);
                } else {
                    snprintf(out->error, sizeof out->error, "reading the body failed");
                }
                wasi_io_error_error_drop_own(serr.val.last_operation_failed);
                complete = false;
            }
            break;
        }
        uint8_t *grown = realloc(all.ptr, all.len + chunk.len);
        if (grown == NULL && all.len + chunk.len > 0) {
            snprintf(out->error, sizeof out->error, "out of memory reading the body");
            handler_sdk_list_u8_free(&chunk);
            complete = false;
            break;
        }
        all.ptr = grown;
        memcpy(all.ptr + all.len, chunk.ptr, chunk.len);
        all.len += chunk.len;
        handler_sdk_list_u8_free(&chunk);
    }
    wasi_io_streams_input_stream_drop_own(input);
    wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(incoming));
    wasi_http_types_incoming_response_drop_own(response);
    if (!complete) {
        free(all.ptr);
        return false;
    }
    out->status = status;
    out->body = all;
    return true;
}
