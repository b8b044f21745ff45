#ifndef CTURNSTILE_LINUX_H
#define CTURNSTILE_LINUX_H

#include <stdint.h>

/// One readiness event, unpacked (the kernel's `struct epoll_event` is packed on x86_64).
typedef struct {
    uint32_t events;
    uint64_t data;
} CTurnstileLinux_event;

extern const uint32_t CTurnstileLinux_EPOLLIN;
extern const uint32_t CTurnstileLinux_EPOLLOUT;
extern const uint32_t CTurnstileLinux_EPOLLERR;
extern const uint32_t CTurnstileLinux_EPOLLHUP;
extern const uint32_t CTurnstileLinux_EPOLLRDHUP;
extern const uint32_t CTurnstileLinux_EPOLLET;
extern const uint32_t CTurnstileLinux_EPOLLEXCLUSIVE;
extern const int CTurnstileLinux_EPOLL_CTL_ADD;
extern const int CTurnstileLinux_EPOLL_CTL_MOD;
extern const int CTurnstileLinux_EPOLL_CTL_DEL;

/// `epoll_create1(EPOLL_CLOEXEC)`.
int CTurnstileLinux_epoll_create(void);
/// `epoll_ctl` with `events` and a 64-bit user value.
int CTurnstileLinux_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/// `epoll_wait` into unpacked events; returns the count, or -1 with errno set.
int CTurnstileLinux_epoll_wait(int epfd, CTurnstileLinux_event *events, int maxevents, int timeout_ms);
/// A non-blocking, close-on-exec `eventfd`.
int CTurnstileLinux_eventfd(void);
/// Adds 1 to an eventfd (wakes its epoll).
int CTurnstileLinux_eventfd_signal(int fd);
/// Reads and resets an eventfd.
int CTurnstileLinux_eventfd_drain(int fd);
/// `accept4` with SOCK_NONBLOCK | SOCK_CLOEXEC, discarding the peer address.
int CTurnstileLinux_accept(int listener);
/// A non-blocking listening TCP socket bound to `host:port` (IPv4 or IPv6 literal), with SO_REUSEADDR.
/// Returns the fd, or -1 with errno set. `bound_port` receives the actual port (for port 0).
int CTurnstileLinux_listen(const char *host, int port, int backlog, int *bound_port);
/// A blocking TCP connection to `host:port`; returns the fd or -1.
int CTurnstileLinux_connect(const char *host, int port);
/// The same with send, receive and connect each bounded by `timeout_ms` (0: no bound).
int CTurnstileLinux_connect_timeout(const char *host, int port, long timeout_ms);
/// Sets TCP_NODELAY.
int CTurnstileLinux_nodelay(int fd);


/// A pipe whose both ends are close-on-exec from the start (pipe2 with O_CLOEXEC), so no child spawned by
/// another thread at that moment inherits them. Returns 0, or -1 with errno.
int CTurnstileLinux_pipe_cloexec(int fds[2]);

/// Adds "close every descriptor from `lowest` up" to posix_spawn file actions (glibc 2.34+), so a spawned
/// command inherits only stdin, stdout and stderr. `actions` is a posix_spawn_file_actions_t *. Returns 0 or an errno.
int CTurnstileLinux_spawn_close_from(void *actions, int lowest);

#endif
