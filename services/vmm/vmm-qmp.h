/* SPDX-License-Identifier: MIT */
#pragma once

/* A QMP (QEMU Machine Protocol) client on sd-event: greeting, capability
 * negotiation, commands with replies, asynchronous events. QMP is one JSON
 * object per line: {"QMP":…} greeting, {"return":…,"id":…},
 * {"error":{"class":…,"desc":…},"id":…}, {"event":…,"data":…}. */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#define QMP_LINE_MAX (1024 * 1024)

typedef enum QmpMessageType {
        QMP_MESSAGE_GREETING,
        QMP_MESSAGE_RETURN,
        QMP_MESSAGE_ERROR,
        QMP_MESSAGE_EVENT,
} QmpMessageType;

typedef struct QmpMessage {
        QmpMessageType type;
        bool has_id;
        uint64_t id;
        const char *event;        /* EVENT: name */
        const char *error_class;  /* ERROR */
        const char *error_desc;   /* ERROR */
        json_t *value;            /* RETURN: "return"; EVENT: "data" (may be NULL); borrowed from root */
        json_t *root;             /* owned */
} QmpMessage;

/* Parses one line; -EBADMSG for anything that is not one of the four
 * message shapes. */
int qmp_message_parse(const char *line, size_t len, QmpMessage *ret);
void qmp_message_done(QmpMessage *m);

typedef struct QmpClient QmpClient;

/* error: 0, or -EIO with error_desc set when QEMU answered an error, or
 * -ECONNRESET when the connection went away before the reply. */
typedef void (*QmpReplyCallback)(QmpClient *q, int error, json_t *value, const char *error_desc, void *userdata);
typedef void (*QmpEventCallback)(QmpClient *q, const char *event, json_t *data, void *userdata);
typedef void (*QmpDisconnectCallback)(QmpClient *q, void *userdata);

/* Connects to the QMP socket; qmp_capabilities is sent after the greeting,
 * commands issued before that are queued. */
int qmp_client_connect(sd_event *e, const char *path, QmpEventCallback on_event,
                       QmpDisconnectCallback on_disconnect, void *userdata, QmpClient **ret);
QmpClient *qmp_client_free(QmpClient *q);
int qmp_client_execute(QmpClient *q, const char *command, QmpReplyCallback cb, void *userdata);
bool qmp_client_is_ready(QmpClient *q);
