/* SPDX-License-Identifier: MIT */
#pragma once

/* The host↔guest channel between vmmd and hostmesh-init, carried over a
 * virtio-serial port. A byte stream of frames:
 *
 *   offset size field
 *        0    2 magic   0x48 0x4d ("HM")
 *        2    1 version AGENT_PROTOCOL_VERSION
 *        3    1 type    AgentFrameType
 *        4    4 id      command id (little endian); 0 for instance-wide frames
 *        8    4 length  payload bytes that follow (little endian)
 *       12    … payload
 *
 * A payload is at most AGENT_PAYLOAD_MAX bytes, so that a whole frame fits
 * one virtio-console buffer (32 KiB) and the guest writes each frame with a
 * single write(). Inside payloads, integers are little endian and a string
 * is a u32 length followed by that many bytes (no NUL inside). Both sides
 * check every length; anything malformed ends the connection.
 *
 * This file is compiled into hostmesh-init (static, PID 1) and into vmmd, so
 * it uses libc only. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_PROTOCOL_VERSION 1
#define AGENT_HEADER_SIZE 12
#define AGENT_PAYLOAD_MAX (32768 - AGENT_HEADER_SIZE)
#define AGENT_ARGS_MAX 1024        /* argv or env entries per command */
#define AGENT_PORT_NAME "org.hostmesh.agent.0"

typedef enum AgentFrameType {
        AGENT_READY = 1,       /* guest→host: u64 boot_usec, u64 init_usec, str kernel release,
                                * then optionally u32 n, u64×n init phases (AgentInitPhase) */
        AGENT_TOKEN = 2,       /* host→guest: str bearer token (empty: none) */
        AGENT_TOKEN_ACK = 3,   /* guest→host: i32 0 or negative errno */
        AGENT_EXEC = 4,        /* host→guest (id): u32 argc, str×argc, u32 envc, str×envc, str cwd */
        AGENT_STDOUT = 5,      /* guest→host (id): raw bytes */
        AGENT_STDERR = 6,      /* guest→host (id): raw bytes */
        AGENT_EXIT = 7,        /* guest→host (id): i32 exit code (128+N when killed by signal N) */
        AGENT_SIGNAL = 8,      /* host→guest (id): i32 signal number for that command */
        AGENT_POWEROFF = 9,    /* host→guest: no payload */
        AGENT_CONTAINER = 10,  /* host→guest (id of its main task): see AgentContainer */
        AGENT_CONTAINER_STATE = 11, /* guest→host (id of the main task): str "running" or "failed: why" */
        AGENT_IMAGE_PULL = 12, /* guest→host (pull id): str image reference; see AgentImageEnd */
        AGENT_IMAGE_DATA = 13, /* host→guest (pull id): u64 offset, then raw bytes to the payload's end */
        AGENT_IMAGE_END = 14,  /* host→guest (pull id): see AgentImageEnd */
        _AGENT_TYPE_MAX,
} AgentFrameType;

typedef struct AgentFrame {
        uint8_t type;
        uint32_t id;
        const uint8_t *payload; /* points into the decoded buffer */
        uint32_t length;
} AgentFrame;

const char *agent_frame_type_to_string(uint8_t type);

/* Decodes one frame from the start of buf. Returns 1 and fills *ret and
 * *ret_consumed when a whole frame is there, 0 when more bytes are needed,
 * -EBADMSG for a bad magic/version/type, -EMSGSIZE for a length above
 * AGENT_PAYLOAD_MAX. */
int agent_frame_decode(const uint8_t *buf, size_t size, AgentFrame *ret, size_t *ret_consumed);

/* A growable byte buffer used to build frames. */
typedef struct AgentBuffer {
        uint8_t *data;
        size_t size;
        size_t allocated;
        bool oom;      /* sticky: any put failed */
} AgentBuffer;

void agent_buffer_done(AgentBuffer *b);
void agent_put_u32(AgentBuffer *b, uint32_t v);
void agent_put_u64(AgentBuffer *b, uint64_t v);
void agent_put_bytes(AgentBuffer *b, const void *p, size_t n);
void agent_put_string(AgentBuffer *b, const char *s);
/* Starts a frame (header with a zero length); agent_frame_end() fills the
 * length in. Returns -EMSGSIZE when the payload grew above the maximum,
 * -ENOMEM when a put failed. */
size_t agent_frame_begin(AgentBuffer *b, AgentFrameType type, uint32_t id);
int agent_frame_end(AgentBuffer *b, size_t start);

/* Payload readers: a cursor over one payload. Every get checks the bytes
 * left; strings are returned as malloc'ed NUL-terminated copies. */
typedef struct AgentReader {
        const uint8_t *p;
        size_t left;
} AgentReader;

int agent_get_u32(AgentReader *r, uint32_t *ret);
int agent_get_u64(AgentReader *r, uint64_t *ret);
int agent_get_string(AgentReader *r, char **ret);

/* A command to run in the guest. A trailing string names the container to
 * run it in; frames without it (older hosts) run it in the guest. */
typedef struct AgentExec {
        char **argv;   /* NULL-terminated, at least one entry */
        char **env;    /* NULL-terminated, entries "K=V" */
        char *cwd;     /* NULL when empty */
        char *container; /* NULL: in the guest itself */
} AgentExec;

int agent_exec_encode(AgentBuffer *b, uint32_t id, char *const *argv, char *const *env, const char *cwd);
int agent_exec_encode_in(AgentBuffer *b, uint32_t id, char *const *argv, char *const *env, const char *cwd,
                         const char *container);
int agent_exec_decode(const AgentFrame *f, AgentExec *ret);
void agent_exec_done(AgentExec *e);

/* Where init's time before READY went, in the order READY carries them.
 * A guest that predates the list sends none (n_phases is 0); one newer
 * than this file may send more, and the ones not known here are skipped. */
typedef enum AgentInitPhase {
        AGENT_PHASE_MOUNTS = 0,   /* /proc, /sys, /dev, /run, ... */
        AGENT_PHASE_MODULES = 1,  /* loading kernel modules (0 on a kernel with everything built in) */
        AGENT_PHASE_NETWORK = 2,  /* lo, eth0 address and route */
        AGENT_PHASE_PORT = 3,     /* waiting for the agent port and opening it */
        _AGENT_PHASE_MAX,
} AgentInitPhase;
#define AGENT_PHASES_MAX 64 /* refused above: a frame of garbage, not a newer guest */

typedef struct AgentReady {
        uint64_t boot_usec;   /* CLOCK_BOOTTIME when init started */
        uint64_t init_usec;   /* init start → READY */
        char *kernel;
        uint32_t n_phases;    /* how many of phase_usec the guest sent (0 for an old guest) */
        uint64_t phase_usec[_AGENT_PHASE_MAX];
} AgentReady;

/* phase_usec holds _AGENT_PHASE_MAX values, or is NULL for none. */
int agent_ready_encode(AgentBuffer *b, uint64_t boot_usec, uint64_t init_usec, const char *kernel,
                       const uint64_t *phase_usec);
int agent_ready_decode(const AgentFrame *f, AgentReady *ret);
void agent_ready_done(AgentReady *r);

/* Frames whose payload is a single i32 (EXIT, TOKEN_ACK, SIGNAL) or a
 * single string (TOKEN). */
int agent_int_encode(AgentBuffer *b, AgentFrameType type, uint32_t id, int32_t v);
int agent_int_decode(const AgentFrame *f, int32_t *ret);
int agent_string_encode(AgentBuffer *b, AgentFrameType type, uint32_t id, const char *s);
int agent_string_decode(const AgentFrame *f, char **ret);

/* A container to create and start, its main task streamed like a command
 * under the frame's id:
 *   str id, str name, str disk serial (virtio-blk serial of its root file
 *   system disk), u32 network (AgentNetwork), u32 argc, str×argc, u32 envc,
 *   str×envc[, str cwd (absolute; empty: the runtime's default)[, str user
 *   (the image's User, not root; see init-user.h; empty: root)[, then for a
 *   container with Docker enabled only: str docker socket path (absolute,
 *   inside the container), str serial of the read-only disk holding its
 *   image (empty: none), str the image reference to give that image in
 *   dockerd (all three empty: no Docker)[, u32 features (AgentFeature bits
 *   of the host)[, u32 n, u32×n exported TCP ports (1..65535, distinct, at
 *   most AGENT_PORTS_MAX)]]]]]. Older hosts send
 *   fewer; a host sending a later part sends the ones before it, empty when
 *   unset. */
typedef enum AgentNetwork {
        AGENT_NETWORK_BRIDGE = 1,  /* its own netns on a bridge in the guest, NAT'ed out */
        AGENT_NETWORK_HOST = 2,    /* the guest's netns */
} AgentNetwork;

#define AGENT_CONTAINER_NAME_MAX 63
#define AGENT_DISK_SERIAL_MAX 20   /* virtio-blk serials are at most 20 bytes */
#define AGENT_PORTS_MAX 16         /* exported ports per container */

typedef struct AgentContainer {
        char *id;      /* [a-z0-9], containerd's container id */
        char *name;    /* [A-Za-z0-9._-] */
        char *serial;
        uint32_t network;
        char **argv;   /* NULL-terminated; vmmd resolved it from the image's config and the request */
        char **env;
        char *cwd;     /* the image's WorkingDir; NULL for the runtime's default */
        char *user;    /* the image's User; NULL for root */
        char *docker_sock_path;   /* NULL: no Docker in this container */
        char *image_serial;       /* NULL or the serial of its image's read-only disk */
        char *image_ref;          /* NULL or what dockerd lists that image as */
        uint32_t features;        /* AgentFeature bits the host supports (0 from older hosts) */
        /* TCP ports the host forwards to: on a BRIDGE container the guest
         * forwards its own port to the container's (same number); on HOST
         * they are the guest's already. */
        uint32_t n_ports;
        uint16_t ports[AGENT_PORTS_MAX];
} AgentContainer;

int agent_container_encode(AgentBuffer *b, uint32_t id, const AgentContainer *c);
int agent_container_decode(const AgentFrame *f, AgentContainer *ret);
void agent_container_done(AgentContainer *c);
/* What a host can do beyond the frames every host knows. A guest uses a
 * feature only when the host announced it: an older vmmd ends the
 * connection at a frame type it does not know. Sent in AGENT_CONTAINER
 * frames after the Docker part (absent from older hosts). */
typedef enum AgentFeature {
        AGENT_FEATURE_IMAGE_PULL = 1U << 0, /* answers AGENT_IMAGE_PULL */
} AgentFeature;

/* Names and ids as the guest uses them in paths and on ctr's command line. */
bool agent_container_name_valid(const char *s);
/* An image's User as the guest takes it: "name", "uid", "name:group",
 * "uid:gid" (and mixes), [A-Za-z0-9._-], at most 256 bytes. */
bool agent_user_valid(const char *s);
/* An absolute path of at most 255 bytes of [A-Za-z0-9._/-], without empty,
 * "." or ".." components: where a Docker socket goes inside a container. */
bool agent_docker_sock_path_valid(const char *s);
/* An image reference as dockerd names images: 1 to 255 bytes of
 * [A-Za-z0-9._/:@-], not starting with '-'. */
bool agent_image_ref_valid(const char *s);

/* Images named inside the instance (docker pull, docker run of a missing
 * image) come from the host's diskd over this channel, never over the
 * network. The guest asks with AGENT_IMAGE_PULL under an id of its choice
 * (non-zero, at most AGENT_IMAGE_PULLS_MAX in flight; vmmd refuses more),
 * naming a reference agent_image_ref_valid() accepts. The host answers
 * with AGENT_IMAGE_DATA frames, the image as diskd unpacked it (its
 * read-only ext4 file; holes are not sent, so the guest writes a sparse
 * file), then one AGENT_IMAGE_END:
 *   u32 status (AgentPullStatus), str message (for a person; empty on
 *   success), u64 size of the file, u32 n, str×n Dockerfile instructions
 *   that give the image its config ("ENTRYPOINT [...]", "CMD [...]",
 *   "ENV K=\"V\"", "WORKDIR /d", "USER u"), as `docker import --change`
 *   takes them.
 * A failed pull sends END only (size 0, no instructions). */
#define AGENT_IMAGE_PULLS_MAX 2
#define AGENT_IMAGE_CHANGES_MAX 256

typedef enum AgentPullStatus {
        AGENT_PULL_OK = 0,
        AGENT_PULL_INVALID = 1,      /* the reference is malformed */
        AGENT_PULL_NOT_FOUND = 2,    /* no such repository or tag */
        AGENT_PULL_DENIED = 3,       /* the registry is not allowed by the host's policy */
        AGENT_PULL_UNAVAILABLE = 4,  /* the registry (or diskd) did not answer */
        AGENT_PULL_BUSY = 5,         /* too many pulls in flight */
        AGENT_PULL_FAILED = 6,       /* anything else; the message says what */
        _AGENT_PULL_STATUS_MAX,
} AgentPullStatus;

typedef struct AgentImageEnd {
        uint32_t status;
        char *message;
        uint64_t size;
        char **changes;  /* NULL-terminated */
} AgentImageEnd;

int agent_image_pull_encode(AgentBuffer *b, uint32_t id, const char *ref);
/* The reference, checked with agent_image_ref_valid(): -EINVAL for a
 * well-formed frame naming something else, -EBADMSG for a malformed one
 * (or a string above 255 bytes). */
int agent_image_pull_decode(const AgentFrame *f, char **ret_ref);
/* Appends DATA frames for n bytes at offset (split at AGENT_PAYLOAD_MAX). */
int agent_image_data_encode(AgentBuffer *b, uint32_t id, uint64_t offset, const void *data, size_t n);
/* Points into the frame: *ret_data stays valid as long as the frame. */
int agent_image_data_decode(const AgentFrame *f, uint64_t *ret_offset, const uint8_t **ret_data, size_t *ret_size);
int agent_image_end_encode(AgentBuffer *b, uint32_t id, const AgentImageEnd *e);
int agent_image_end_decode(const AgentFrame *f, AgentImageEnd *ret);
void agent_image_end_done(AgentImageEnd *e);
const char *agent_pull_status_to_string(uint32_t status);
