/*
 * rebind.c: the LD_PRELOAD shim websockify.py uses to wrap a program
 * (`websockify.py PORT -- PROGRAM ARGS`).
 *
 * When the program binds a TCP socket to the wrapped port, on any address,
 * the shim binds it instead to the loopback address of the same family
 * (127.0.0.1 for AF_INET, ::1 for AF_INET6) on a port the kernel picks, and
 * sends that port to websockify. The port is never chosen by closing a probe
 * socket, so no other process can take it in between. Every other bind()
 * (other ports, other families, UDP) goes to the real bind() untouched.
 *
 * Environment, read once when the library is loaded (websockify.py sets the
 * first two; they are inherited, so a program that forks or daemonizes still
 * reports its ports):
 *
 *   WEBSOCKIFY_WRAP_PORT    the port to move, 1-65535; unset or invalid: the
 *                           shim does nothing
 *   WEBSOCKIFY_WRAP_REPORT  path of websockify's Unix datagram socket; after
 *                           each moved bind the shim sends one datagram
 *                           "rebind 4 PORT PID" (IPv4) or "rebind 6 PORT PID"
 *   WEBSOCKIFY_WRAP_DEBUG   set and not "0": one line per decision on stderr
 *
 * Build: cc -O2 -Wall -Wextra -shared -fPIC -o rebind.so rebind.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static bind_fn real_bind;
static int wrap_port;                   /* host byte order; 0: inactive */
static int debug;
static struct sockaddr_un report_addr;
static socklen_t report_len;

static void say(const char *fmt, ...)
{
    va_list ap;

    if (!debug)
        return;
    va_start(ap, fmt);
    fprintf(stderr, "rebind.so[%ld]: ", (long)getpid());
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

__attribute__((constructor))
static void rebind_init(void)
{
    const char *s;
    char *end;
    long port;
    size_t n;

    if (real_bind)
        return;
    dlerror();
    *(void **)&real_bind = dlsym(RTLD_NEXT, "bind");
    if (!real_bind) {
        s = dlerror();
        fprintf(stderr, "rebind.so: cannot find the real bind(): %s\n",
                s ? s : "no such symbol");
        exit(127);
    }
    s = getenv("WEBSOCKIFY_WRAP_DEBUG");
    debug = s && *s && strcmp(s, "0") != 0;
    s = getenv("WEBSOCKIFY_WRAP_PORT");
    if (s && *s) {
        errno = 0;
        port = strtol(s, &end, 10);
        if (errno || *end || port < 1 || port > 65535)
            say("ignoring WEBSOCKIFY_WRAP_PORT=%s: not a port", s);
        else
            wrap_port = (int)port;
    }
    s = getenv("WEBSOCKIFY_WRAP_REPORT");
    if (s && *s) {
        n = strlen(s);
        if (n >= sizeof report_addr.sun_path) {
            say("ignoring WEBSOCKIFY_WRAP_REPORT: path too long");
        } else {
            report_addr.sun_family = AF_UNIX;
            memcpy(report_addr.sun_path, s, n + 1);
            report_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        }
    }
}

/* Tell websockify which loopback port the program got (best effort). */
static void report(int family, int port)
{
    char msg[64];
    int fd, len;

    if (!report_len) {
        say("moved port %d to loopback port %d; no WEBSOCKIFY_WRAP_REPORT to tell",
            wrap_port, port);
        return;
    }
    len = snprintf(msg, sizeof msg, "rebind %d %d %ld",
                   family == AF_INET6 ? 6 : 4, port, (long)getpid());
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || sendto(fd, msg, (size_t)len, MSG_DONTWAIT,
                         (struct sockaddr *)&report_addr, report_len) != len)
        say("cannot report port %d: %s", port, strerror(errno));
    else
        say("moved port %d to loopback port %d, reported", wrap_port, port);
    if (fd >= 0)
        close(fd);
}

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
    struct sockaddr_storage got;
    const struct sockaddr *moved;
    socklen_t moved_len, got_len = sizeof got, type_len = sizeof(int);
    int saved = errno, type = 0, rc, err, port;

    if (!real_bind)
        rebind_init();
    if (!wrap_port || !addr || len < (socklen_t)sizeof(sa_family_t))
        return real_bind(fd, addr, len);
    if (addr->sa_family == AF_INET && len >= (socklen_t)sizeof in4) {
        memcpy(&in4, addr, sizeof in4);
        if (ntohs(in4.sin_port) != wrap_port)
            return real_bind(fd, addr, len);
        in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        in4.sin_port = 0;
        moved = (const struct sockaddr *)&in4;
        moved_len = sizeof in4;
    } else if (addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof in6) {
        memcpy(&in6, addr, sizeof in6);
        if (ntohs(in6.sin6_port) != wrap_port)
            return real_bind(fd, addr, len);
        in6.sin6_addr = in6addr_loopback;
        in6.sin6_port = 0;
        in6.sin6_flowinfo = 0;
        in6.sin6_scope_id = 0;
        moved = (const struct sockaddr *)&in6;
        moved_len = sizeof in6;
    } else {
        return real_bind(fd, addr, len);
    }
    /* Only stream sockets: a UDP service on the same number is left alone. */
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) < 0 || type != SOCK_STREAM) {
        errno = saved;
        return real_bind(fd, addr, len);
    }
    errno = saved;
    rc = real_bind(fd, moved, moved_len);
    err = errno;
    if (rc == 0) {
        if (getsockname(fd, (struct sockaddr *)&got, &got_len) == 0) {
            port = got.ss_family == AF_INET6
                ? ntohs(((struct sockaddr_in6 *)&got)->sin6_port)
                : ntohs(((struct sockaddr_in *)&got)->sin_port);
            report(got.ss_family, port);
        } else {
            say("getsockname failed after moving port %d: %s", wrap_port, strerror(errno));
        }
    } else {
        say("bind to loopback for port %d failed: %s", wrap_port, strerror(err));
    }
    errno = err;
    return rc;
}
