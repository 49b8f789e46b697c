/*
 * resolve.c - name resolution runs on a spare thread.
 *
 * glibc's resolver talks to DNS servers over sockets it opens and polls
 * internally, through calls no wrapper sees, and reads /etc files; a
 * lookup can take seconds (timeouts, retries). A fiber hands the whole
 * call to offload.c and parks. The call runs with the spare's resolver
 * state (_res) and h_errno; h_errno is carried back like errno. Lookups
 * that need no resolver at all (a numeric address and a numeric or no
 * service) are answered here, without a hand-off.
 */
#include "offload.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <string.h>

struct shim_gai {
    const char *node;
    const char *service;
    const struct addrinfo *hints;
    struct addrinfo **res;
};

static long shim__getaddrinfo_blocking(void *p)
{
    struct shim_gai *g = p;
    return REAL(getaddrinfo)(g->node, g->service, g->hints, g->res);
}

static bool shim__numeric(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* True when getaddrinfo needs neither the resolver nor /etc/services. */
static bool shim__gai_local(const char *node, const char *service)
{
    unsigned char addr[sizeof(struct in6_addr)];
    bool host = !node || inet_pton(AF_INET, node, addr) == 1 ||
                inet_pton(AF_INET6, node, addr) == 1;
    return host && (!service || shim__numeric(service));
}

int shim__getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                      struct addrinfo **res)
{
    if (!fs_self() || shim__gai_local(node, service))
        return REAL(getaddrinfo)(node, service, hints, res);
    struct shim_gai g = {node, service, hints, res};
    return (int)shim__offload_blocking(shim__getaddrinfo_blocking, &g, FS_PARK_OTHER);
}
SHIM_ALIAS(getaddrinfo)

struct shim_gni {
    const struct sockaddr *sa;
    socklen_t salen;
    char *host;
    socklen_t hostlen;
    char *serv;
    socklen_t servlen;
    int flags;
};

static long shim__getnameinfo_blocking(void *p)
{
    struct shim_gni *g = p;
    return REAL(getnameinfo)(g->sa, g->salen, g->host, g->hostlen, g->serv, g->servlen,
                             g->flags);
}

int shim__getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                      char *serv, socklen_t servlen, int flags)
{
    bool local = (!host || (flags & NI_NUMERICHOST)) && (!serv || (flags & NI_NUMERICSERV));
    if (!fs_self() || local)
        return REAL(getnameinfo)(sa, salen, host, hostlen, serv, servlen, flags);
    struct shim_gni g = {sa, salen, host, hostlen, serv, servlen, flags};
    return (int)shim__offload_blocking(shim__getnameinfo_blocking, &g, FS_PARK_OTHER);
}
SHIM_ALIAS(getnameinfo)

struct shim_ghbn {
    const char *name;
    struct hostent *ret;
    int herr; /* h_errno as the call left it */
};

static long shim__gethostbyname_blocking(void *p)
{
    struct shim_ghbn *g = p;
    g->ret = REAL(gethostbyname)(g->name);
    g->herr = h_errno;
    return 0;
}

/* The result lives in glibc's static buffer, which belongs to the process,
 * not to the spare: it stays valid until the next call, as without us. */
struct hostent *shim__gethostbyname(const char *name)
{
    if (!fs_self())
        return REAL(gethostbyname)(name);
    struct shim_ghbn g = {name, NULL, 0};
    shim__offload_blocking(shim__gethostbyname_blocking, &g, FS_PARK_OTHER);
    h_errno = g.herr;
    return g.ret;
}
SHIM_ALIAS(gethostbyname)

struct shim_ghbn_r {
    const char *name;
    struct hostent *ret;
    char *buf;
    size_t buflen;
    struct hostent **result;
    int *herr;
};

static long shim__gethostbyname_r_blocking(void *p)
{
    struct shim_ghbn_r *g = p;
    return REAL(gethostbyname_r)(g->name, g->ret, g->buf, g->buflen, g->result, g->herr);
}

int shim__gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t buflen,
                          struct hostent **result, int *herr)
{
    struct shim_ghbn_r g = {name, ret, buf, buflen, result, herr};
    return (int)shim__offload_blocking(shim__gethostbyname_r_blocking, &g, FS_PARK_OTHER);
}
SHIM_ALIAS(gethostbyname_r)
