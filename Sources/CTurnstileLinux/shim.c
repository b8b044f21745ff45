#include "CTurnstileLinux.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>
#include <spawn.h>

_Static_assert(sizeof(uint64_t) == sizeof(epoll_data_t), "epoll_data_t holds a uint64_t");

const uint32_t CTurnstileLinux_EPOLLIN = EPOLLIN;
const uint32_t CTurnstileLinux_EPOLLOUT = EPOLLOUT;
const uint32_t CTurnstileLinux_EPOLLERR = EPOLLERR;
const uint32_t CTurnstileLinux_EPOLLHUP = EPOLLHUP;
const uint32_t CTurnstileLinux_EPOLLRDHUP = EPOLLRDHUP;
const uint32_t CTurnstileLinux_EPOLLET = EPOLLET;
const uint32_t CTurnstileLinux_EPOLLEXCLUSIVE = EPOLLEXCLUSIVE;
const int CTurnstileLinux_EPOLL_CTL_ADD = EPOLL_CTL_ADD;
const int CTurnstileLinux_EPOLL_CTL_MOD = EPOLL_CTL_MOD;
const int CTurnstileLinux_EPOLL_CTL_DEL = EPOLL_CTL_DEL;

int CTurnstileLinux_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int CTurnstileLinux_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event event;
    memset(&event, 0, sizeof(event));
    event.events = events;
    event.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &event);
}

int CTurnstileLinux_epoll_wait(int epfd, CTurnstileLinux_event *events, int maxevents, int timeout_ms) {
    struct epoll_event raw[256];
    if (maxevents > 256) maxevents = 256;
    int count;
    do {
        count = epoll_wait(epfd, raw, maxevents, timeout_ms);
    } while (count < 0 && errno == EINTR);
    for (int i = 0; i < count; i++) {
        events[i].events = raw[i].events;
        events[i].data = raw[i].data.u64;
    }
    return count;
}

int CTurnstileLinux_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int CTurnstileLinux_eventfd_signal(int fd) {
    uint64_t one = 1;
    return write(fd, &one, sizeof(one)) == sizeof(one) ? 0 : -1;
}

int CTurnstileLinux_eventfd_drain(int fd) {
    uint64_t value;
    return read(fd, &value, sizeof(value)) == sizeof(value) ? 0 : -1;
}

int CTurnstileLinux_accept(int listener) {
    int fd;
    do {
        fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    return fd;
}

/// Fills `storage` with the IPv6 or IPv4 literal `host` and `port`; returns the family, or -1 (errno EINVAL).
static int CTurnstileLinux_address(const char *host, int port, struct sockaddr_storage *storage, socklen_t *length) {
    memset(storage, 0, sizeof(*storage));
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)storage;
    struct sockaddr_in *v4 = (struct sockaddr_in *)storage;
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *length = sizeof(*v6);
        return AF_INET6;
    }
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *length = sizeof(*v4);
        return AF_INET;
    }
    errno = EINVAL;
    return -1;
}

int CTurnstileLinux_listen(const char *host, int port, int backlog, int *bound_port) {
    struct sockaddr_storage storage;
    socklen_t length;
    int family = CTurnstileLinux_address(host, port, &storage, &length);
    if (family < 0) return -1;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &yes, sizeof(yes));
    if (bind(fd, (struct sockaddr *)&storage, length) < 0 || listen(fd, backlog) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    if (bound_port != NULL) {
        struct sockaddr_storage actual;
        socklen_t actual_length = sizeof(actual);
        getsockname(fd, (struct sockaddr *)&actual, &actual_length);
        *bound_port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&actual)->sin6_port : ((struct sockaddr_in *)&actual)->sin_port);
    }
    return fd;
}

int CTurnstileLinux_connect(const char *host, int port) {
    return CTurnstileLinux_connect_timeout(host, port, 0);
}

int CTurnstileLinux_connect_timeout(const char *host, int port, long timeout_ms) {
    struct sockaddr_storage storage;
    socklen_t length;
    int family = CTurnstileLinux_address(host, port, &storage, &length);
    if (family < 0) return -1;
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (timeout_ms > 0) {
        // On Linux SO_SNDTIMEO also bounds connect(); both bound every later send and receive.
        struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    int result;
    do { result = connect(fd, (struct sockaddr *)&storage, length); } while (result < 0 && errno == EINTR);
    if (result < 0) { int saved = errno; close(fd); errno = saved; return -1; }
    return fd;
}

int CTurnstileLinux_nodelay(int fd) {
    int yes = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
}

int CTurnstileLinux_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

int CTurnstileLinux_spawn_close_from(void *actions, int lowest) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, lowest);
}
