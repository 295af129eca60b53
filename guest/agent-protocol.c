/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent-protocol.h"

static const char *const frame_type_names[_AGENT_TYPE_MAX] = {
        [AGENT_READY] = "READY",       [AGENT_TOKEN] = "TOKEN", [AGENT_TOKEN_ACK] = "TOKEN_ACK",
        [AGENT_EXEC] = "EXEC",         [AGENT_STDOUT] = "STDOUT", [AGENT_STDERR] = "STDERR",
        [AGENT_EXIT] = "EXIT",         [AGENT_SIGNAL] = "SIGNAL", [AGENT_POWEROFF] = "POWEROFF",
        [AGENT_CONTAINER] = "CONTAINER", [AGENT_CONTAINER_STATE] = "CONTAINER_STATE",
        [AGENT_IMAGE_PULL] = "IMAGE_PULL", [AGENT_IMAGE_DATA] = "IMAGE_DATA", [AGENT_IMAGE_END] = "IMAGE_END",
};

const char *agent_frame_type_to_string(uint8_t type) {
        if (type >= _AGENT_TYPE_MAX || !frame_type_names[type])
                return "UNKNOWN";
        return frame_type_names[type];
}

static uint32_t read_le32(const uint8_t *p) {
        return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

static void write_le32(uint8_t *p, uint32_t v) {
        p[0] = v;
        p[1] = v >> 8;
        p[2] = v >> 16;
        p[3] = v >> 24;
}

int agent_frame_decode(const uint8_t *buf, size_t size, AgentFrame *ret, size_t *ret_consumed) {
        uint32_t length;

        /* Check what is there already, so that garbage is refused at once
         * instead of after waiting for a whole header. */
        if (size >= 1 && buf[0] != 0x48)
                return -EBADMSG;
        if (size >= 2 && buf[1] != 0x4d)
                return -EBADMSG;
        if (size >= 3 && buf[2] != AGENT_PROTOCOL_VERSION)
                return -EBADMSG;
        if (size >= 4 && (buf[3] == 0 || buf[3] >= _AGENT_TYPE_MAX))
                return -EBADMSG;
        if (size < AGENT_HEADER_SIZE)
                return 0;
        length = read_le32(buf + 8);
        if (length > AGENT_PAYLOAD_MAX)
                return -EMSGSIZE;
        if (size - AGENT_HEADER_SIZE < length)
                return 0;
        *ret = (AgentFrame){
                .type = buf[3],
                .id = read_le32(buf + 4),
                .payload = buf + AGENT_HEADER_SIZE,
                .length = length,
        };
        *ret_consumed = AGENT_HEADER_SIZE + (size_t) length;
        return 1;
}

void agent_buffer_done(AgentBuffer *b) {
        free(b->data);
        *b = (AgentBuffer){};
}

static uint8_t *buffer_extend(AgentBuffer *b, size_t n) {
        if (b->oom)
                return NULL;
        if (n > SIZE_MAX / 2 - b->size) {
                b->oom = true;
                return NULL;
        }
        if (b->size + n > b->allocated) {
                size_t a = b->allocated ? b->allocated : 256;
                uint8_t *d;

                while (a < b->size + n)
                        a *= 2;
                d = realloc(b->data, a);
                if (!d) {
                        b->oom = true;
                        return NULL;
                }
                b->data = d;
                b->allocated = a;
        }
        b->size += n;
        return b->data + b->size - n;
}

void agent_put_u32(AgentBuffer *b, uint32_t v) {
        uint8_t *p = buffer_extend(b, 4);
        if (p)
                write_le32(p, v);
}

void agent_put_u64(AgentBuffer *b, uint64_t v) {
        agent_put_u32(b, (uint32_t) v);
        agent_put_u32(b, (uint32_t) (v >> 32));
}

void agent_put_bytes(AgentBuffer *b, const void *data, size_t n) {
        uint8_t *p;

        if (n == 0)
                return;
        p = buffer_extend(b, n);
        if (p)
                memcpy(p, data, n);
}

void agent_put_string(AgentBuffer *b, const char *s) {
        size_t n = s ? strlen(s) : 0;

        if (n > UINT32_MAX) {
                b->oom = true;
                return;
        }
        agent_put_u32(b, (uint32_t) n);
        agent_put_bytes(b, s, n);
}

size_t agent_frame_begin(AgentBuffer *b, AgentFrameType type, uint32_t id) {
        size_t start = b->size;
        uint8_t *p = buffer_extend(b, AGENT_HEADER_SIZE);

        if (p) {
                p[0] = 0x48;
                p[1] = 0x4d;
                p[2] = AGENT_PROTOCOL_VERSION;
                p[3] = (uint8_t) type;
                write_le32(p + 4, id);
                write_le32(p + 8, 0);
        }
        return start;
}

int agent_frame_end(AgentBuffer *b, size_t start) {
        size_t length;

        if (b->oom)
                return -ENOMEM;
        length = b->size - start - AGENT_HEADER_SIZE;
        if (length > AGENT_PAYLOAD_MAX) {
                b->size = start;
                return -EMSGSIZE;
        }
        write_le32(b->data + start + 8, (uint32_t) length);
        return 0;
}

int agent_get_u32(AgentReader *r, uint32_t *ret) {
        if (r->left < 4)
                return -EBADMSG;
        *ret = read_le32(r->p);
        r->p += 4;
        r->left -= 4;
        return 0;
}

int agent_get_u64(AgentReader *r, uint64_t *ret) {
        /* Both are set below (8 bytes are there); initialized all the same,
         * since GCC cannot always see that once inlined. */
        uint32_t lo = 0, hi = 0;

        if (r->left < 8)
                return -EBADMSG;
        (void) agent_get_u32(r, &lo);
        (void) agent_get_u32(r, &hi);
        *ret = (uint64_t) hi << 32 | lo;
        return 0;
}

int agent_get_string(AgentReader *r, char **ret) {
        uint32_t n;
        char *s;
        int k;

        k = agent_get_u32(r, &n);
        if (k < 0)
                return k;
        if (n > r->left)
                return -EBADMSG;
        if (memchr(r->p, 0, n))
                return -EBADMSG;
        s = malloc((size_t) n + 1);
        if (!s)
                return -ENOMEM;
        memcpy(s, r->p, n);
        s[n] = 0;
        r->p += n;
        r->left -= n;
        *ret = s;
        return 0;
}

static void strv_free(char **l) {
        if (!l)
                return;
        for (char **i = l; *i; i++)
                free(*i);
        free(l);
}

static size_t strv_length(char *const *l) {
        size_t n = 0;
        while (l && l[n])
                n++;
        return n;
}

static int get_strv(AgentReader *r, bool need_one, char ***ret) {
        uint32_t n;
        char **l;
        int k;

        k = agent_get_u32(r, &n);
        if (k < 0)
                return k;
        if (n > AGENT_ARGS_MAX || (need_one && n == 0))
                return -EBADMSG;
        /* Each entry takes at least its 4 length bytes: refuse counts the
         * payload cannot hold before allocating for them. */
        if ((size_t) n * 4 > r->left)
                return -EBADMSG;
        l = calloc((size_t) n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (uint32_t i = 0; i < n; i++) {
                k = agent_get_string(r, &l[i]);
                if (k < 0) {
                        strv_free(l);
                        return k;
                }
        }
        *ret = l;
        return 0;
}

int agent_exec_encode(AgentBuffer *b, uint32_t id, char *const *argv, char *const *env, const char *cwd) {
        return agent_exec_encode_in(b, id, argv, env, cwd, NULL);
}

int agent_exec_encode_in(AgentBuffer *b, uint32_t id, char *const *argv, char *const *env, const char *cwd,
                         const char *container) {
        size_t argc = strv_length(argv), envc = strv_length(env), start;

        if (argc == 0 || argc > AGENT_ARGS_MAX || envc > AGENT_ARGS_MAX)
                return -EINVAL;
        start = agent_frame_begin(b, AGENT_EXEC, id);
        agent_put_u32(b, (uint32_t) argc);
        for (size_t i = 0; i < argc; i++)
                agent_put_string(b, argv[i]);
        agent_put_u32(b, (uint32_t) envc);
        for (size_t i = 0; i < envc; i++)
                agent_put_string(b, env[i]);
        agent_put_string(b, cwd);
        if (container) {
                if (!agent_container_name_valid(container))
                        return -EINVAL;
                agent_put_string(b, container);
        }
        return agent_frame_end(b, start);
}

int agent_exec_decode(const AgentFrame *f, AgentExec *ret) {
        AgentReader r = { f->payload, f->length };
        AgentExec e = {};
        int k;

        if (f->type != AGENT_EXEC)
                return -EBADMSG;
        k = get_strv(&r, /* need_one= */ true, &e.argv);
        if (k < 0)
                goto fail;
        k = get_strv(&r, /* need_one= */ false, &e.env);
        if (k < 0)
                goto fail;
        for (char **i = e.env; *i; i++)
                if (!strchr(*i, '=') || **i == '=') {
                        k = -EBADMSG;
                        goto fail;
                }
        k = agent_get_string(&r, &e.cwd);
        if (k < 0)
                goto fail;
        if (r.left > 0) {
                k = agent_get_string(&r, &e.container);
                if (k < 0)
                        goto fail;
                if (!agent_container_name_valid(e.container)) {
                        k = -EBADMSG;
                        goto fail;
                }
        }
        if (r.left != 0) {
                k = -EBADMSG;
                goto fail;
        }
        if (!*e.cwd) {
                free(e.cwd);
                e.cwd = NULL;
        }
        *ret = e;
        return 0;
fail:
        agent_exec_done(&e);
        return k;
}

void agent_exec_done(AgentExec *e) {
        strv_free(e->argv);
        strv_free(e->env);
        free(e->cwd);
        free(e->container);
        *e = (AgentExec){};
}

int agent_ready_encode(AgentBuffer *b, uint64_t boot_usec, uint64_t init_usec, const char *kernel,
                       const uint64_t *phase_usec) {
        size_t start = agent_frame_begin(b, AGENT_READY, 0);

        agent_put_u64(b, boot_usec);
        agent_put_u64(b, init_usec);
        agent_put_string(b, kernel);
        if (phase_usec) {
                agent_put_u32(b, _AGENT_PHASE_MAX);
                for (size_t k = 0; k < _AGENT_PHASE_MAX; k++)
                        agent_put_u64(b, phase_usec[k]);
        }
        return agent_frame_end(b, start);
}

int agent_ready_decode(const AgentFrame *f, AgentReady *ret) {
        AgentReader r = { f->payload, f->length };
        AgentReady a = {};
        int k;

        if (f->type != AGENT_READY)
                return -EBADMSG;
        k = agent_get_u64(&r, &a.boot_usec);
        if (k < 0)
                return k;
        k = agent_get_u64(&r, &a.init_usec);
        if (k < 0)
                return k;
        k = agent_get_string(&r, &a.kernel);
        if (k < 0)
                return k;
        /* The phases were added later: their absence is an older guest. */
        if (r.left > 0) {
                uint32_t n;

                k = agent_get_u32(&r, &n);
                if (k < 0)
                        goto fail;
                if (n > AGENT_PHASES_MAX || r.left != (size_t) n * 8) {
                        k = -EBADMSG;
                        goto fail;
                }
                for (uint32_t p = 0; p < n; p++) {
                        uint64_t v;

                        k = agent_get_u64(&r, &v);
                        if (k < 0)
                                goto fail;
                        if (p < _AGENT_PHASE_MAX)
                                a.phase_usec[p] = v;
                }
                a.n_phases = n < _AGENT_PHASE_MAX ? n : _AGENT_PHASE_MAX;
        }
        *ret = a;
        return 0;
fail:
        free(a.kernel);
        return k;
}

void agent_ready_done(AgentReady *r) {
        free(r->kernel);
        *r = (AgentReady){};
}

int agent_int_encode(AgentBuffer *b, AgentFrameType type, uint32_t id, int32_t v) {
        size_t start = agent_frame_begin(b, type, id);

        agent_put_u32(b, (uint32_t) v);
        return agent_frame_end(b, start);
}

int agent_int_decode(const AgentFrame *f, int32_t *ret) {
        if (f->length != 4)
                return -EBADMSG;
        *ret = (int32_t) read_le32(f->payload);
        return 0;
}

int agent_string_encode(AgentBuffer *b, AgentFrameType type, uint32_t id, const char *s) {
        size_t start = agent_frame_begin(b, type, id);

        agent_put_string(b, s);
        return agent_frame_end(b, start);
}

int agent_string_decode(const AgentFrame *f, char **ret) {
        AgentReader r = { f->payload, f->length };
        char *s;
        int k;

        k = agent_get_string(&r, &s);
        if (k < 0)
                return k;
        if (r.left != 0) {
                free(s);
                return -EBADMSG;
        }
        *ret = s;
        return 0;
}

bool agent_container_name_valid(const char *s) {
        size_t n = s ? strlen(s) : 0;

        if (n == 0 || n > AGENT_CONTAINER_NAME_MAX || s[0] == '.' || s[0] == '-')
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                      *s == '.' || *s == '_' || *s == '-'))
                        return false;
        return true;
}

static bool serial_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > AGENT_DISK_SERIAL_MAX)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
                        return false;
        return true;
}

bool agent_docker_sock_path_valid(const char *s) {
        size_t n = s ? strlen(s) : 0;

        if (n < 2 || n > 255 || s[0] != '/')
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '.' || *p == '_' || *p == '-' || *p == '/'))
                        return false;
        /* Component by component: none empty (no "//", no trailing '/'), none "." or "..". */
        for (const char *p = s + 1;;) {
                const char *e = strchr(p, '/');
                size_t len = e ? (size_t) (e - p) : strlen(p);

                if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
                        return false;
                if (!e)
                        return true;
                p = e + 1;
        }
}

bool agent_image_ref_valid(const char *s) {
        size_t n = s ? strlen(s) : 0;

        if (n == 0 || n > 255 || s[0] == '-')
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                      *s == '.' || *s == '_' || *s == '-' || *s == '/' || *s == ':' || *s == '@'))
                        return false;
        return true;
}

static bool env_valid(char *const *env) {
        for (char *const *i = env; i && *i; i++)
                if (!strchr(*i, '=') || **i == '=')
                        return false;
        return true;
}

bool agent_user_valid(const char *s) {
        size_t n = strlen(s), colons = 0;

        if (n == 0 || n > 256 || s[0] == ':' || s[n - 1] == ':')
                return false;
        for (; *s; s++) {
                if (*s == ':')
                        colons++;
                else if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                           *s == '.' || *s == '_' || *s == '-'))
                        return false;
        }
        return colons <= 1;
}

/* At most AGENT_PORTS_MAX ports, each non-zero, none twice. */
static bool ports_valid(const uint16_t *ports, uint32_t n) {
        if (n > AGENT_PORTS_MAX)
                return false;
        for (uint32_t i = 0; i < n; i++) {
                if (ports[i] == 0)
                        return false;
                for (uint32_t j = 0; j < i; j++)
                        if (ports[j] == ports[i])
                                return false;
        }
        return true;
}

int agent_container_encode(AgentBuffer *b, uint32_t id, const AgentContainer *c) {
        size_t argc = strv_length(c->argv), envc = strv_length(c->env), start;

        if (!agent_container_name_valid(c->id) || !agent_container_name_valid(c->name) || !c->serial ||
            !serial_valid(c->serial) || (c->network != AGENT_NETWORK_BRIDGE && c->network != AGENT_NETWORK_HOST) ||
            argc > AGENT_ARGS_MAX || envc > AGENT_ARGS_MAX || !env_valid(c->env))
                return -EINVAL;
        if (c->docker_sock_path &&
            (!agent_docker_sock_path_valid(c->docker_sock_path) ||
             (c->image_serial && !serial_valid(c->image_serial)) || (c->image_ref && !agent_image_ref_valid(c->image_ref))))
                return -EINVAL;
        start = agent_frame_begin(b, AGENT_CONTAINER, id);
        agent_put_string(b, c->id);
        agent_put_string(b, c->name);
        agent_put_string(b, c->serial);
        agent_put_u32(b, c->network);
        agent_put_u32(b, (uint32_t) argc);
        for (size_t i = 0; i < argc; i++)
                agent_put_string(b, c->argv[i]);
        agent_put_u32(b, (uint32_t) envc);
        for (size_t i = 0; i < envc; i++)
                agent_put_string(b, c->env[i]);
        if (!ports_valid(c->ports, c->n_ports))
                return -EINVAL;
        if ((c->cwd && *c->cwd) || c->user || c->docker_sock_path || c->n_ports > 0) {
                if (c->cwd && *c->cwd && c->cwd[0] != '/')
                        return -EINVAL;
                agent_put_string(b, c->cwd ? c->cwd : "");
        }
        if (c->user || c->docker_sock_path || c->n_ports > 0) {
                if (c->user && !agent_user_valid(c->user))
                        return -EINVAL;
                agent_put_string(b, c->user ? c->user : "");
        }
        if (c->docker_sock_path || c->n_ports > 0) {
                agent_put_string(b, c->docker_sock_path ?: "");
                agent_put_string(b, c->docker_sock_path && c->image_serial ? c->image_serial : "");
                agent_put_string(b, c->docker_sock_path && c->image_ref ? c->image_ref : "");
                agent_put_u32(b, c->features);
        }
        if (c->n_ports > 0) {
                agent_put_u32(b, c->n_ports);
                for (uint32_t i = 0; i < c->n_ports; i++)
                        agent_put_u32(b, c->ports[i]);
        }
        return agent_frame_end(b, start);
}

int agent_container_decode(const AgentFrame *f, AgentContainer *ret) {
        AgentReader r = { f->payload, f->length };
        AgentContainer c = {};
        int k;

        if (f->type != AGENT_CONTAINER)
                return -EBADMSG;
        if ((k = agent_get_string(&r, &c.id)) < 0 || (k = agent_get_string(&r, &c.name)) < 0 ||
            (k = agent_get_string(&r, &c.serial)) < 0 || (k = agent_get_u32(&r, &c.network)) < 0 ||
            (k = get_strv(&r, /* need_one= */ false, &c.argv)) < 0 ||
            (k = get_strv(&r, /* need_one= */ false, &c.env)) < 0)
                goto fail;
        /* The working directory trails: a frame of an older host has none. */
        if (r.left > 0 && (k = agent_get_string(&r, &c.cwd)) < 0)
                goto fail;
        if (c.cwd && !*c.cwd) {
                free(c.cwd);
                c.cwd = NULL;
        }
        if (r.left > 0 && (k = agent_get_string(&r, &c.user)) < 0)
                goto fail;
        /* Empty: root (sent by a host that has a Docker part to send). */
        if (c.user && !*c.user) {
                free(c.user);
                c.user = NULL;
        }
        if ((c.cwd && c.cwd[0] != '/') || (c.user && !agent_user_valid(c.user))) {
                k = -EBADMSG;
                goto fail;
        }
        if (r.left > 0) {
                /* Docker enabled: all three strings, the socket path valid,
                 * the others empty or valid. */
                if ((k = agent_get_string(&r, &c.docker_sock_path)) < 0 ||
                    (k = agent_get_string(&r, &c.image_serial)) < 0 || (k = agent_get_string(&r, &c.image_ref)) < 0)
                        goto fail;
                if (!c.image_serial[0]) {
                        free(c.image_serial);
                        c.image_serial = NULL;
                }
                if (!c.image_ref[0]) {
                        free(c.image_ref);
                        c.image_ref = NULL;
                }
                /* All empty: no Docker (a host that has ports to send). */
                if (!c.docker_sock_path[0]) {
                        free(c.docker_sock_path);
                        c.docker_sock_path = NULL;
                        if (c.image_serial || c.image_ref) {
                                k = -EBADMSG;
                                goto fail;
                        }
                }
                if ((c.docker_sock_path && !agent_docker_sock_path_valid(c.docker_sock_path)) ||
                    (c.image_serial && !serial_valid(c.image_serial)) ||
                    (c.image_ref && !agent_image_ref_valid(c.image_ref))) {
                        k = -EBADMSG;
                        goto fail;
                }
                /* The host's features trail: an older host sends none.
                 * Bits not known here are kept and ignored. */
                if (r.left > 0 && (k = agent_get_u32(&r, &c.features)) < 0)
                        goto fail;
        }
        if (r.left > 0) {
                uint32_t n, port;

                if ((k = agent_get_u32(&r, &n)) < 0)
                        goto fail;
                if (n == 0 || n > AGENT_PORTS_MAX) {
                        k = -EBADMSG;
                        goto fail;
                }
                for (uint32_t i = 0; i < n; i++) {
                        if ((k = agent_get_u32(&r, &port)) < 0)
                                goto fail;
                        if (port == 0 || port > 65535) {
                                k = -EBADMSG;
                                goto fail;
                        }
                        c.ports[i] = (uint16_t) port;
                }
                c.n_ports = n;
                if (!ports_valid(c.ports, c.n_ports)) {
                        k = -EBADMSG;
                        goto fail;
                }
        }
        if (r.left != 0 || !agent_container_name_valid(c.id) || !agent_container_name_valid(c.name) ||
            !serial_valid(c.serial) || (c.network != AGENT_NETWORK_BRIDGE && c.network != AGENT_NETWORK_HOST) ||
            !env_valid(c.env)) {
                k = -EBADMSG;
                goto fail;
        }
        *ret = c;
        return 0;
fail:
        agent_container_done(&c);
        return k;
}

void agent_container_done(AgentContainer *c) {
        free(c->id);
        free(c->name);
        free(c->serial);
        strv_free(c->argv);
        strv_free(c->env);
        free(c->cwd);
        free(c->user);
        free(c->docker_sock_path);
        free(c->image_serial);
        free(c->image_ref);
        *c = (AgentContainer){};
}

int agent_image_pull_encode(AgentBuffer *b, uint32_t id, const char *ref) {
        if (id == 0 || !agent_image_ref_valid(ref))
                return -EINVAL;
        return agent_string_encode(b, AGENT_IMAGE_PULL, id, ref);
}

int agent_image_pull_decode(const AgentFrame *f, char **ret_ref) {
        char *ref = NULL;
        int k;

        if (f->type != AGENT_IMAGE_PULL || f->id == 0)
                return -EBADMSG;
        /* A reference is at most 255 bytes: anything longer is refused
         * before it is copied. */
        if (f->length > 4 + 255)
                return -EBADMSG;
        k = agent_string_decode(f, &ref);
        if (k < 0)
                return k;
        /* Well framed, but not a reference: the host answers it (INVALID)
         * rather than ending the channel. */
        if (!agent_image_ref_valid(ref)) {
                free(ref);
                return -EINVAL;
        }
        *ret_ref = ref;
        return 0;
}

int agent_image_data_encode(AgentBuffer *b, uint32_t id, uint64_t offset, const void *data, size_t n) {
        const uint8_t *p = data;

        if (n > UINT64_MAX - offset)
                return -EINVAL;
        while (n > 0) {
                size_t chunk = n < AGENT_PAYLOAD_MAX - 8 ? n : AGENT_PAYLOAD_MAX - 8;
                size_t start = agent_frame_begin(b, AGENT_IMAGE_DATA, id);
                int r;

                agent_put_u64(b, offset);
                agent_put_bytes(b, p, chunk);
                r = agent_frame_end(b, start);
                if (r < 0)
                        return r;
                p += chunk;
                offset += chunk;
                n -= chunk;
        }
        return 0;
}

int agent_image_data_decode(const AgentFrame *f, uint64_t *ret_offset, const uint8_t **ret_data, size_t *ret_size) {
        AgentReader r = { f->payload, f->length };
        uint64_t offset;
        int k;

        if (f->type != AGENT_IMAGE_DATA || f->id == 0)
                return -EBADMSG;
        k = agent_get_u64(&r, &offset);
        if (k < 0)
                return k;
        if (r.left > UINT64_MAX - offset)
                return -EBADMSG;
        *ret_offset = offset;
        *ret_data = r.p;
        *ret_size = r.left;
        return 0;
}

int agent_image_end_encode(AgentBuffer *b, uint32_t id, const AgentImageEnd *e) {
        size_t n = strv_length(e->changes), start;

        if (id == 0 || e->status >= _AGENT_PULL_STATUS_MAX || n > AGENT_IMAGE_CHANGES_MAX ||
            (e->status != AGENT_PULL_OK && (n > 0 || e->size > 0)))
                return -EINVAL;
        start = agent_frame_begin(b, AGENT_IMAGE_END, id);
        agent_put_u32(b, e->status);
        agent_put_string(b, e->message ?: "");
        agent_put_u64(b, e->size);
        agent_put_u32(b, (uint32_t) n);
        for (size_t i = 0; i < n; i++)
                agent_put_string(b, e->changes[i]);
        return agent_frame_end(b, start);
}

int agent_image_end_decode(const AgentFrame *f, AgentImageEnd *ret) {
        AgentReader r = { f->payload, f->length };
        AgentImageEnd e = {};
        int k;

        if (f->type != AGENT_IMAGE_END || f->id == 0)
                return -EBADMSG;
        if ((k = agent_get_u32(&r, &e.status)) < 0 || (k = agent_get_string(&r, &e.message)) < 0 ||
            (k = agent_get_u64(&r, &e.size)) < 0 || (k = get_strv(&r, /* need_one= */ false, &e.changes)) < 0)
                goto fail;
        if (r.left != 0 || e.status >= _AGENT_PULL_STATUS_MAX || strv_length(e.changes) > AGENT_IMAGE_CHANGES_MAX ||
            (e.status != AGENT_PULL_OK && (e.size > 0 || e.changes[0]))) {
                k = -EBADMSG;
                goto fail;
        }
        *ret = e;
        return 0;
fail:
        agent_image_end_done(&e);
        return k;
}

void agent_image_end_done(AgentImageEnd *e) {
        free(e->message);
        strv_free(e->changes);
        *e = (AgentImageEnd){};
}

const char *agent_pull_status_to_string(uint32_t status) {
        static const char *const names[_AGENT_PULL_STATUS_MAX] = {
                [AGENT_PULL_OK] = "ok",           [AGENT_PULL_INVALID] = "invalid",
                [AGENT_PULL_NOT_FOUND] = "not-found", [AGENT_PULL_DENIED] = "denied",
                [AGENT_PULL_UNAVAILABLE] = "unavailable", [AGENT_PULL_BUSY] = "busy",
                [AGENT_PULL_FAILED] = "failed",
        };
        return status < _AGENT_PULL_STATUS_MAX ? names[status] : "unknown";
}
