/* SPDX-License-Identifier: MIT */
#pragma once

/* The proto3 JSON mapping (protobuf.dev, "ProtoJSON format") over
 * protobuf-c descriptors and jansson: lowerCamelCase names on output (the
 * proto name is accepted too on input), 64-bit integers as strings, enums by
 * name, bytes as base64, google.protobuf.Timestamp as RFC 3339 and Duration
 * as "1.5s", maps as objects, default values omitted. Input is strict:
 * unknown fields, wrong types, out-of-range numbers and unknown enum names
 * are refused with a message naming the field. */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

/* JSON text → protobuf wire bytes of message type `d`. On -EINVAL,
 * *ret_error says what is wrong (free()). */
int proto_json_to_binary(const ProtobufCMessageDescriptor *d, const char *json, size_t len, uint8_t **ret,
                         size_t *ret_len, char **ret_error);
/* Protobuf wire bytes of type `d` → compact JSON text (NUL-terminated).
 * -EBADMSG when the bytes do not decode. */
int proto_binary_to_json(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, char **ret,
                         size_t *ret_len);

/* Checks protobuf wire bytes against message type `d` before anything
 * decodes them: every field number must be one `d` knows and travel in the
 * wire type its type uses, nested messages included. On -EINVAL,
 * *ret_error names the field by its JSON path ("containers[0].name"), as
 * proto_json_to_binary() does for JSON (free()). */
int proto_binary_check(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, char **ret_error);

/* base64 as the JSON mapping takes it (RFC 4648 §4 or §5, padded or not).
 * -EINVAL when it is not base64. */
int proto_base64_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len);

/* The message tree forms, for callers that hold messages already. */
int proto_json_to_message(const ProtobufCMessageDescriptor *d, json_t *j, ProtobufCMessage **ret, char **ret_error);
int proto_message_to_json(const ProtobufCMessage *m, json_t **ret);

/* The first field of `m` (or of a message inside it) that the descriptors
 * do not know — what protobuf-c keeps aside and a handler would silently
 * ignore. Returns true and writes "pkg.Message" to ret_type and the field
 * number to ret_number; `allowed` lists "pkg.Message:N" entries to pass over
 * (NULL-terminated, or NULL). */
bool proto_find_unknown_field(const ProtobufCMessage *m, const char *const *allowed, const char **ret_type,
                              uint32_t *ret_number);
